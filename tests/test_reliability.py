"""A fast subset of the reliability harness (tests/reliability/; the full sweep is `make reliability`).

Crashes at a few points of `launch` and of the finishing `poll` of every backend, one run at the
30 % transient-fault rate per backend, one run of two concurrent `labeljob poll` processes on
an S3 workspace, and the portal abuse probes but the slow one against a real server. Every run
must keep every promise the harness checks; nothing here depends on timing (the concurrent
pollers' overlap is forced with a barrier, and the checks hold whatever the interleaving).
"""

from __future__ import annotations

import functools

import pytest

from tests.reliability import abuse, concurrency
from tests.reliability.scenarios import GroundTruthScenario, MTurkScenario, PortalScenario
from tests.reliability.sweep import baseline, crash_sweep, transient_run

# First, second, a middle one, second to last and last crash point of each command.
FEW_POINTS = [1, 2, 7, -2, -1]


@pytest.fixture(params=["portal", "groundtruth", "mturk"])
def scenario(request, moto_url):
    return request.param, {
        "portal": PortalScenario,
        "groundtruth": functools.partial(GroundTruthScenario, moto_url=moto_url),
        "mturk": MTurkScenario,
    }[request.param]


@pytest.mark.parametrize(("command", "phase"), [("launch", "-"), ("poll", "final")])
def test_a_crash_at_a_few_points_then_the_same_command_again_keeps_every_promise(
    tmp_path, scenario, command, phase
):
    backend, make = scenario
    sweep = crash_sweep(make, backend, tmp_path / "run", command, phase, only=FEW_POINTS)
    assert sweep.points >= 4 and len(sweep.outcomes) >= 4
    assert sweep.problems == []


def test_a_crash_while_the_job_is_half_done_keeps_every_promise(tmp_path):
    sweep = crash_sweep(MTurkScenario, "mturk", tmp_path / "run", "poll", "partial", only=FEW_POINTS)
    assert sweep.problems == []


def test_transient_faults_at_30_percent_change_nothing(tmp_path, scenario):
    _, make = scenario
    base = baseline(make, tmp_path / "run")
    outcome = transient_run(make, tmp_path / "run", 0.3, seed=1, base=base)
    assert outcome.problems == []
    assert outcome.injected > 0


def test_two_concurrent_polls_on_an_s3_workspace_keep_the_record_consistent_and_finish_once(
    tmp_path, moto_url
):
    make = functools.partial(concurrency.PortalWorld, moto_url=moto_url)
    base = concurrency.reference(make, tmp_path / "run")
    outcome = concurrency.concurrent_run(make, tmp_path / "run", 1, base)
    assert outcome.exit_codes == [0, 0]
    assert outcome.finishes == 1
    assert outcome.problems == []


@pytest.mark.parametrize("make", [PortalScenario, MTurkScenario], ids=["portal", "mturk"])
def test_an_adaptive_job_keeps_every_promise_through_a_crash_in_the_poll_that_extends_it(tmp_path, make):
    # The first poll after every object has min_workers answers is the one that settles or extends.
    sweep = crash_sweep(
        functools.partial(make, adaptive=True),
        make.backend_name,
        tmp_path / "run",
        "poll",
        "final",
        only=FEW_POINTS,
    )
    assert sweep.points >= 4 and sweep.problems == []


def test_a_real_portal_server_refuses_forged_entries_and_cuts_an_oversized_body(tmp_path):
    # The slow-head probe waits out the server's 10 s head deadline: it runs in `make reliability`,
    # and tests/test_portal_hardening.py checks the deadline with a shorter one.
    portal = abuse.Portal(tmp_path)
    found = abuse.Abuse()
    try:
        abuse.forged_entries(portal, found, per_kind=3)
        abuse.oversized_body(portal, found, limit=20 * 2**20)
    finally:
        portal.close()
    assert [(f.attempts, f.refused) for f in found.forged] == [(3, 3)] * 3
    assert found.stored_after == found.stored_before
    assert found.oversized_status == 413
    assert found.problems == []
