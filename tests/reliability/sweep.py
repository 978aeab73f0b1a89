"""Runs scenarios under faults and reports what held.

Crash sweep: for a command (`launch`, or `poll` part-way through the job, or the `poll` that finds
it finished), run it with a crash at point k, then start a new process, run the command again and
drive the job to its end without faults; compare with a fault-free run. Transient faults: drive a
job from launch to outputs with a share of calls failing; a command that still fails (retries
exhausted) is run again, as a scheduler would, and counted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.jobs import JobRecord
from tests.reliability.faults import Calls, SimulatedCrash, fast_retries
from tests.reliability.scenarios import MAX_POLLS, clear, differences, duplicate_files

# A command failing this many times in a row under transient faults counts as not surviving them.
MAX_ATTEMPTS = 10
COMMANDS = (("launch", "-"), ("poll", "partial"), ("poll", "final"))

Factory = Callable[..., object]  # (folder, **fault options) -> a scenario


@dataclass
class Outcome:
    """One run: the promises that did not hold (none = survived) and what the run met."""

    problems: list[str]
    crash_point: str = ""
    failed_commands: int = 0
    injected: int = 0
    duplicates: int = 0
    seconds: float = 0.0


@dataclass
class Sweep:
    backend: str
    command: str
    phase: str
    points: int
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def held(self) -> int:
        return sum(1 for o in self.outcomes if not o.problems)

    @property
    def problems(self) -> list[str]:
        return [f"{o.crash_point}: {p}" for o in self.outcomes for p in o.problems]


def complete(scenario) -> JobRecord:
    """Poll until the job has ended and has its outputs, letting the crowd work between polls."""
    for _ in range(MAX_POLLS):
        record = scenario.poll()
        if record.terminal and record.outputs:
            return record
        scenario.work()
    raise AssertionError(f"the job did not finish in {MAX_POLLS} polls")


def baseline(make: Factory, folder: Path) -> dict[str, str]:
    """The snapshot of a fault-free run from launch to outputs; its invariants must hold."""
    return reference_run(make, folder, "launch", "-").snapshot


def _prepare(scenario, command: str, phase: str) -> None:
    """Bring the job to the moment the command runs."""
    if command == "launch":
        return
    scenario.launch()
    scenario.work(limit=max(1, scenario.objects // 2) if phase == "partial" else None)


def _run(scenario, command: str) -> None:
    if command == "launch":
        scenario.launch()
    else:
        scenario.poll()


@dataclass
class Reference:
    """A fault-free run of the same steps: the crash points the command passes, and the outputs."""

    points: list[str]
    snapshot: dict[str, str]
    duplicates: int


def reference_run(make: Factory, folder: Path, command: str, phase: str) -> Reference:
    scenario = make(clear(folder))
    try:
        _prepare(scenario, command, phase)
        calls = Calls()
        with calls.hooked():
            _run(scenario, command)
        _continue(scenario, command, phase)
        problems = scenario.invariants()
        assert not problems, problems
        return Reference(calls.points, scenario.snapshot(), duplicate_files(scenario.stores()))
    finally:
        scenario.close()


def _continue(scenario, command: str, phase: str) -> None:
    """After the command: the rest of the crowd's work, and polls until the job has its outputs."""
    if command == "launch" or phase == "partial":
        scenario.work()
    complete(scenario)


def crash_run(make: Factory, folder: Path, command: str, phase: str, k: int, reference: Reference) -> Outcome:
    """Crash the command at point k, run it again in a new process, finish the job, check it."""
    started = time.perf_counter()
    scenario = make(clear(folder))
    calls = Calls(crash_at=k)
    try:
        _prepare(scenario, command, phase)
        with contextlib.suppress(SimulatedCrash), calls.hooked():
            _run(scenario, command)
        if not calls.crashed:
            return Outcome([f"no crash point {k}: the command passed {len(calls.points)}"])
        scenario.restart()
        _run(scenario, command)
        _continue(scenario, command, phase)
        problems = scenario.invariants() + differences(reference.snapshot, scenario.snapshot())
        return Outcome(
            problems,
            calls.points[-1],
            duplicates=duplicate_files(scenario.stores()) - reference.duplicates,
            seconds=time.perf_counter() - started,
        )
    except Exception as exc:  # a run that cannot finish is the finding
        return Outcome([f"{type(exc).__name__}: {exc}"], calls.points[-1] if calls.points else "")
    finally:
        scenario.close()


def crash_sweep(
    make: Factory, backend: str, folder: Path, command: str, phase: str, *, only: list[int] | None = None
) -> Sweep:
    """Crash at every point of the command (or at the points `only` lists, 1-based; negative counts
    from the end)."""
    reference = reference_run(make, folder, command, phase)
    n = len(reference.points)
    ks = range(1, n + 1) if only is None else sorted({k if k > 0 else n + 1 + k for k in only if abs(k) <= n})
    sweep = Sweep(backend, command, phase, n)
    for k in ks:
        sweep.outcomes.append(crash_run(make, folder, command, phase, k, reference))
    return sweep


def transient_run(make: Factory, folder: Path, rate: float, seed: int, base: dict) -> Outcome:
    """Launch, work and poll to the end with a share `rate` of calls failing transiently."""
    with fast_retries():  # before any client exists: clients capture the retry handlers they are made with
        return _transient_run(make, folder, rate, seed, base)


def _transient_run(make: Factory, folder: Path, rate: float, seed: int, base: dict) -> Outcome:
    started = time.perf_counter()
    scenario = make(clear(folder), fault_rate=rate, seed=seed)
    failed = 0

    def attempt(step: Callable[[], object]) -> object:
        nonlocal failed
        for _ in range(MAX_ATTEMPTS):
            try:
                with scenario.faults():
                    return step()
            except Exception:
                failed += 1
                scenario.restart()
        raise AssertionError(f"a command failed {MAX_ATTEMPTS} times in a row")

    try:
        attempt(scenario.launch)
        scenario.work()
        for _ in range(MAX_POLLS):
            record = attempt(scenario.poll)
            if record.terminal and record.outputs:
                break
            scenario.work()
        problems = scenario.invariants() + differences(base, scenario.snapshot())
        return Outcome(
            problems,
            failed_commands=failed,
            injected=scenario.injected(),
            duplicates=duplicate_files(scenario.stores()),
            seconds=time.perf_counter() - started,
        )
    except Exception as exc:
        return Outcome([f"{type(exc).__name__}: {exc}"], failed_commands=failed, injected=scenario.injected())
    finally:
        scenario.close()
