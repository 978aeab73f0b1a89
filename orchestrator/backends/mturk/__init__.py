"""Mechanical Turk: the backend, its checked client, HITs, questions, answer review, the private
pool and fees."""
