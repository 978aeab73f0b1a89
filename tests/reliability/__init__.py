"""The reliability harness: crash injection, transient faults and concurrent polls against every backend.

`python -m tests.reliability` (`make reliability`) runs the full sweep and writes
docs/reliability.md; tests/test_reliability.py runs a fast subset of the same scenarios.
"""
