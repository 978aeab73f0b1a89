"""Polling MTurk jobs against the fake: answers, review exactly once, expiry, stop and cleanup."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.backends.mturk.review import SPAM_FEEDBACK, UNREADABLE_FEEDBACK
from orchestrator.cli.app import app
from orchestrator.errors import BackendError
from orchestrator.jobs import status_row
from tests.fakes.mturk import SPAMMERS, FakeMTurk, MTurkJob, SimulatedCrash, crash_after, pedestrian_images


def settled(fake: FakeMTurk, operation: str) -> Counter:
    """How many times each assignment was successfully approved (or rejected)."""
    return Counter(
        c.params["AssignmentId"] for c in fake.calls if c.operation == operation and c.outcome == "ok"
    )


def stored_answers(job: MTurkJob) -> dict[str, set[str]]:
    """Worker ids per object in the Ground Truth worker-response layout the job layer wrote."""
    found: dict[str, set[str]] = {}
    for path in (job.output_folder() / "annotations" / "worker-response" / "iteration-1").glob("*/*.json"):
        answers = json.loads(path.read_text())["answers"]
        found.setdefault(path.parent.name, set()).update(a["workerId"] for a in answers)
    return found


def iou(a: dict, b: dict) -> float:
    width = min(a["left"] + a["width"], b["left"] + b["width"]) - max(a["left"], b["left"])
    height = min(a["top"] + a["height"], b["top"] + b["height"]) - max(a["top"], b["top"])
    inter = max(0.0, width) * max(0.0, height)
    return inter / (a["width"] * a["height"] + b["width"] * b["height"] - inter)


def precision_recall(manifest: Path, images: list[dict]) -> tuple[float, float]:
    """Greedy one-to-one matching at IoU 0.5 of the augmented manifest against the expert boxes."""
    experts = {image["image"]: image["expert"] for image in images}
    tp = fp = fn = 0
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        truth = list(experts[row["source-ref"].rsplit("/", 1)[1]])
        for box in row["bbox"]["annotations"]:
            best = max(truth, key=lambda t: iou(box, t), default=None)
            if best is not None and iou(box, best) >= 0.5:
                tp += 1
                truth.remove(best)
            else:
                fp += 1
        fn += len(truth)
    return tp / (tp + fp), tp / (tp + fn)


def test_end_to_end_with_spammers_matches_the_consolidation_benchmark(
    fake_mturk: FakeMTurk, tmp_path: Path
) -> None:
    fake_mturk.spam_rate = 0.1
    job = MTurkJob(fake_mturk, tmp_path, count=60, stride=8, mturk={"review_policy": "agreement"})
    job.launch()
    for _ in range(4):
        fake_mturk.work()
        record = job.poll()
    assert record.status == "completed"
    assert record.counters.labeled == record.counters.total == 59
    assert sorted(stored_answers(job), key=int) == [item.object_id for item in job.items]
    assert all(len(workers) == 5 for workers in stored_answers(job).values())
    rejected = [c for c in fake_mturk.calls if c.operation == "RejectAssignment"]
    assert rejected and all(c.params["RequesterFeedback"] == SPAM_FEEDBACK for c in rejected)
    assert {fake_mturk.assignments[c.params["AssignmentId"]].worker_id for c in rejected} <= set(SPAMMERS)
    # Spam on an image where the crowd saw nothing is not clear spam: approved, and outvoted.
    spam = [a for a in fake_mturk.assignments.values() if a.worker_id in SPAMMERS]
    assert len(rejected) >= len(spam) / 2
    assert all(
        a.rejected < a.auto_approval for a in fake_mturk.assignments.values() if a.status == "Rejected"
    )
    assert max(Counter(settled(fake_mturk, "ApproveAssignment")).values()) == 1
    precision, recall = precision_recall(Path(record.outputs["manifest"].removeprefix("file://")), job.images)
    f1 = 2 * precision * recall / (precision + recall)
    assert precision >= 0.95 and f1 >= 0.85, (precision, recall, f1)
    assert (job.output_folder() / "reports" / "workers.csv").is_file()


def test_approve_all_approves_every_submission_once(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    fake_mturk.spam_rate = 0.2
    job = MTurkJob(fake_mturk, tmp_path, count=3, task={"workers_per_object": 3})
    job.launch()
    fake_mturk.work()
    record = job.poll()
    assert record.status == "completed"
    assert sum(settled(fake_mturk, "ApproveAssignment").values()) == len(fake_mturk.assignments) == 9
    assert fake_mturk.count("RejectAssignment", None) == 0
    assert job.poll().status == "completed"  # a finished job is not polled again
    assert sum(settled(fake_mturk, "ApproveAssignment").values()) == 9


def run_until_crash(
    tmp_path: Path, k: int, policy: str, task: dict | None = None, rounds: int = 3, count: int = 2
) -> tuple[FakeMTurk, MTurkJob, str] | None:
    """A job whose k-th MTurk call of its first poll crashes, then runs `rounds` more work-and-poll
    rounds, and the operation the crash followed; None if that poll makes fewer calls."""
    fake = FakeMTurk(spam_rate=0.25, seed=4).start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL_MTURK", fake.url)
        folder = tmp_path / f"{policy}-{k}"
        folder.mkdir()
        job = MTurkJob(
            fake, folder, count=count, task=task or {"workers_per_object": 3}, mturk={"review_policy": policy}
        )
        job.launch()
        fake.work()
        before = len(fake.calls)
        crash_after(job.session, k)
        try:
            job.poll()
        except SimulatedCrash:
            crashed_after = fake.calls[before + k - 1].operation
            job.restart()
            for _ in range(rounds):
                fake.work()
                record = job.poll()
            assert record.status == "completed"
            return fake, job, crashed_after
        finally:
            fake.close()
    return None


@pytest.mark.parametrize("policy", ["approve_all", "agreement"])
def test_a_crash_anywhere_in_a_poll_never_settles_an_assignment_twice(tmp_path: Path, policy: str) -> None:
    crashes = 0
    for k in range(1, 100):
        outcome = run_until_crash(tmp_path, k, policy)
        if outcome is None:
            break
        crashes += 1
        fake, job, _ = outcome
        approvals = settled(fake, "ApproveAssignment")
        rejections = settled(fake, "RejectAssignment")
        assert max(approvals.values()) == 1 and max(rejections.values(), default=1) == 1
        assert not set(approvals) & set(rejections)
        # The status was read first: no attempt was ever refused as already settled.
        assert fake.count("ApproveAssignment", "AWS.MechanicalTurk.InvalidAssignmentState") == 0
        assert fake.count("RejectAssignment", "AWS.MechanicalTurk.InvalidAssignmentState") == 0
        assert all(a.status in ("Approved", "Rejected") for a in fake.assignments.values())
        assert set(job.record.backend_state["rejected"]) == set(rejections)
        assert all(len(workers) == 3 for workers in stored_answers(job).values())
    assert crashes >= 8


def test_throttling_and_lost_responses_during_review(
    fake_mturk: FakeMTurk, tmp_path: Path, fast_retries: None
) -> None:
    job = MTurkJob(fake_mturk, tmp_path, count=4, task={"workers_per_object": 3})
    job.launch()
    fake_mturk.work()
    fake_mturk.faults.throttle("ListAssignmentsForHIT", times=2)
    fake_mturk.faults.throttle("ApproveAssignment", times=3)
    fake_mturk.faults.service_faults(rate=0.4, operations={"ApproveAssignment"}, lost_response=True, seed=3)
    assert job.poll().status == "completed"
    assert fake_mturk.count("ApproveAssignment", "AWS.ServiceUnavailable") > 0
    assert max(settled(fake_mturk, "ApproveAssignment").values()) == 1
    assert all(a.status == "Approved" for a in fake_mturk.assignments.values())


def test_malformed_answers_are_flagged_under_approve_all(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    fake_mturk.malformed_rate = 0.4
    job = MTurkJob(fake_mturk, tmp_path, count=5, task={"workers_per_object": 3})
    job.launch()
    fake_mturk.work()
    record = job.poll()
    assert record.status == "completed"
    flagged = record.backend_state["flagged"]
    assert flagged and {f["problem"] for f in flagged.values()} <= {
        "bad_xml",
        "missing_task_answers",
        "bad_json",
        "not_an_object",
    }
    assert all(fake_mturk.assignments[a].status == "Approved" for a in flagged)  # paid, but not used
    stored = sum(len(workers) for workers in stored_answers(job).values())
    assert stored == len(fake_mturk.assignments) - len(flagged)


def test_malformed_answers_are_rejected_and_replaced_under_agreement(
    fake_mturk: FakeMTurk, tmp_path: Path
) -> None:
    fake_mturk.malformed_rate = 0.3
    job = MTurkJob(
        fake_mturk, tmp_path, count=4, task={"workers_per_object": 3}, mturk={"review_policy": "agreement"}
    )
    job.launch()
    for _ in range(4):
        fake_mturk.work()
        record = job.poll()
    assert record.status == "completed"
    unreadable = [c for c in fake_mturk.calls if c.operation == "RejectAssignment"]
    assert unreadable and all(c.params["RequesterFeedback"] == UNREADABLE_FEEDBACK for c in unreadable)
    assert fake_mturk.count("CreateAdditionalAssignmentsForHIT") > 0
    assert all(hit.max_assignments <= 6 for hit in fake_mturk.live_hits())


def test_an_expired_hit_missing_answers_is_extended(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    job = MTurkJob(fake_mturk, tmp_path, count=1, task={"workers_per_object": 3, "lifetime": "1h"})
    job.launch()
    fake_mturk.work(limit=2)
    fake_mturk.advance(3601)
    record = job.poll()
    assert record.status == "in_progress"
    (extension,) = [c for c in fake_mturk.calls if c.operation == "UpdateExpirationForHIT"]
    assert extension.params["ExpireAt"] == pytest.approx(fake_mturk.now.timestamp() + 3600)
    assert record.backend_state["hits"]["0"]["extensions"] == 1
    fake_mturk.work()
    record = job.poll()
    assert record.status == "completed" and record.counters.labeled == 1
    assert len(stored_answers(job)["0"]) == 3


def test_an_expired_hit_past_its_extensions_ends_with_what_it_has(
    fake_mturk: FakeMTurk, tmp_path: Path
) -> None:
    job = MTurkJob(fake_mturk, tmp_path, count=2, task={"workers_per_object": 3, "lifetime": "1h"})
    job.launch()
    fake_mturk.work(limit=4)  # object 0 gets 3 answers, object 1 one
    fake_mturk.advance(3601)
    job.poll()
    fake_mturk.advance(3601)  # the extension runs out unanswered
    record = job.poll()
    assert record.status == "completed"
    assert fake_mturk.count("UpdateExpirationForHIT") == 1
    assert {k: len(v) for k, v in stored_answers(job).items()} == {"0": 3, "1": 1}


def test_nobody_answering_fails_the_job(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    job = MTurkJob(fake_mturk, tmp_path, count=1, task={"lifetime": "1h"}, mturk={"max_extensions": 0})
    job.launch()
    fake_mturk.advance(3601)
    result = job.backend.poll(job.spec, job.record)
    assert result.status == "failed" and "no worker answered" in result.failure_reason
    assert result.unlabeled_ids == ["0"]


def test_auto_approved_work_is_collected_without_approving_again(
    fake_mturk: FakeMTurk, tmp_path: Path
) -> None:
    job = MTurkJob(
        fake_mturk,
        tmp_path,
        count=1,
        task={"workers_per_object": 3},
        mturk={"review_policy": "agreement", "auto_approve_after": "1h"},
    )
    job.launch()
    fake_mturk.work(limit=2)
    assert job.poll().counters.labeled == 0
    assert fake_mturk.count("ApproveAssignment", None) == 0  # waiting for the third, auto-approval is far
    fake_mturk.advance(3601)  # no poll in time: MTurk approves by itself
    fake_mturk.work()
    record = job.poll()
    assert record.status == "completed"
    assert len(stored_answers(job)["0"]) == 3
    assert fake_mturk.count("ApproveAssignment", None) == 1  # only the one that arrived last


def test_review_comes_before_auto_approval_when_a_hit_is_slow(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    job = MTurkJob(
        fake_mturk,
        tmp_path,
        count=1,
        task={"workers_per_object": 3},
        mturk={"review_policy": "agreement", "auto_approve_after": "4h"},
    )
    job.launch()
    fake_mturk.work(limit=2)
    fake_mturk.advance(3 * 3600 + 60)  # less than a quarter of the delay left
    job.poll()
    assert fake_mturk.count("ApproveAssignment") == 2
    assert all(a.approved < a.auto_approval for a in fake_mturk.assignments.values())


def test_rejected_work_is_replaced_but_a_hit_never_reaches_ten(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    fake_mturk.spam_rate = 0.6
    job = MTurkJob(
        fake_mturk, tmp_path, count=3, task={"workers_per_object": 7}, mturk={"review_policy": "agreement"}
    )
    job.launch()
    for _ in range(5):
        fake_mturk.work()
        job.poll()
    assert fake_mturk.count("CreateAdditionalAssignmentsForHIT") > 0
    assert (
        fake_mturk.count(
            "CreateAdditionalAssignmentsForHIT", "AWS.MechanicalTurk.InvalidMaximumAssignmentsIncrease"
        )
        == 0
    )
    assert max(hit.max_assignments for hit in fake_mturk.live_hits()) == 9


def test_repeat_offenders_are_blocked_once(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    fake_mturk.spam_rate = 0.5
    job = MTurkJob(
        fake_mturk,
        tmp_path,
        count=6,
        task={"workers_per_object": 3},
        mturk={"review_policy": "agreement", "block_after_rejections": 2},
    )
    job.launch()
    for _ in range(4):
        fake_mturk.work()
        record = job.poll()
    blocked = record.backend_state["blocked"]
    assert blocked and set(blocked) <= set(SPAMMERS)
    assert sorted(fake_mturk.blocks) == sorted(blocked)
    assert fake_mturk.count("CreateWorkerBlock") == len(blocked)


def test_stop_expires_the_hits_and_the_next_poll_ends_the_job(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    job = MTurkJob(fake_mturk, tmp_path, count=3, task={"workers_per_object": 3})
    job.launch()
    fake_mturk.work(limit=4)
    job.backend.stop(job.spec, job.record)
    job.backend.stop(job.spec, job.record)  # a repeated stop is "already processed": success
    assert fake_mturk.count("UpdateExpirationForHIT") == 3
    assert fake_mturk.count("UpdateExpirationForHIT", "RequestError") == 3
    assert all(hit.expiration < fake_mturk.now for hit in fake_mturk.live_hits())
    fake_mturk.work()  # nobody can take an expired HIT
    record = job.poll()
    assert record.status == "stopped"
    assert record.outputs["manifest"]
    assert {k: len(v) for k, v in stored_answers(job).items()} == {"0": 3, "1": 1}


def test_cleanup_deletes_the_reviewed_hits_of_a_finished_job(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    job = MTurkJob(fake_mturk, tmp_path, count=3, task={"workers_per_object": 3})
    runner = CliRunner()
    args = ["--workspace", str(tmp_path / "workspace"), "--format", "json", "cleanup", "pedestrians"]
    job.launch()
    with pytest.raises(BackendError, match="still in_progress"):
        job.backend.cleanup(job.spec, job.record)
    fake_mturk.work()
    assert job.poll().status == "completed"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"job": "pedestrians", "deleted": 3, "kept": 0}
    assert fake_mturk.live_hits() == []
    again = runner.invoke(app, args)
    assert json.loads(again.stdout)["deleted"] == 3  # gone already counts as deleted


def test_the_commands_run_a_job_end_to_end(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    images = [record["image"] for record in pedestrian_images(3, stride=20)]
    (tmp_path / "input.manifest").write_text(
        "".join(
            json.dumps({"source-ref": f"s3://labeljob-test-images/ped/{image}"}) + "\n" for image in images
        )
    )
    (tmp_path / "job.toml").write_text(
        'name = "cli-job"\nbackend = "mturk"\nlabels = ["pedestrian"]\ninput_manifest = "input.manifest"\n'
        'output = "output"\n[task]\nworkers_per_object = 3\n[workforce]\ntype = "public"\n'
        '[mturk]\nreview_policy = "agreement"\n'
    )
    runner = CliRunner()
    options = ["--workspace", str(tmp_path / "workspace"), "--format", "json"]
    launched = runner.invoke(app, [*options, "launch", str(tmp_path / "job.toml")])
    assert launched.exit_code == 0, launched.output
    assert json.loads(launched.stdout)["status"] == "in_progress"
    fake_mturk.work()
    polled = runner.invoke(app, [*options, "poll", "cli-job"])
    assert polled.exit_code == 0, polled.output
    row = json.loads(polled.stdout)
    assert (row["status"], row["labeled"], row["total"]) == ("completed", 3, 3)
    manifest = Path(row["output_manifest"].removeprefix("file://"))
    assert len(manifest.read_text().splitlines()) == 3


# ----------------------------------------------------------------------------- adaptive overlap

ADAPTIVE = {"workers_per_object": 3, "adaptive": {"min_workers": 2, "max_workers": 5}}


def extensions(fake: FakeMTurk) -> Counter:
    """Successful CreateAdditionalAssignmentsForHIT calls per (HIT, request token)."""
    return Counter(
        (c.params["HITId"], c.params["UniqueRequestToken"])
        for c in fake.calls
        if c.operation == "CreateAdditionalAssignmentsForHIT" and c.outcome == "ok"
    )


def test_an_adaptive_job_adds_assignments_only_where_the_rule_asks(
    fake_mturk: FakeMTurk, tmp_path: Path
) -> None:
    job = MTurkJob(fake_mturk, tmp_path, count=20, stride=7, task=ADAPTIVE)
    job.launch()
    assert {hit.max_assignments for hit in fake_mturk.live_hits()} == {2}
    for _ in range(6):
        fake_mturk.work()
        record = job.poll()
        if record.status == "completed":
            break
    assert record.status == "completed"
    answers = {object_id: len(workers) for object_id, workers in stored_answers(job).items()}
    assert sorted(answers, key=int) == [item.object_id for item in job.items]
    assert min(answers.values()) == 2 and 2 < max(answers.values()) <= 5, answers
    # One request per extension, and each answer approved once and stored.
    assert set(extensions(fake_mturk).values()) == {1}
    assert sum(settled(fake_mturk, "ApproveAssignment").values()) == sum(answers.values())
    hits = record.backend_state["hits"]
    assert all(e.get("settled") or e["asked"] == 5 for e in hits.values())
    assert {e["asked"] for e in hits.values()} == set(answers.values())
    row = status_row(record)
    assert (row["settled"], row["answers_final"]) == (20, sum(answers.values()))
    assert row["saved_vs_fixed"] == round(1 - sum(answers.values()) / 60, 3)


def test_a_crash_anywhere_in_an_adaptive_poll_neither_extends_nor_settles_twice(tmp_path: Path) -> None:
    crashed_after = Counter()
    for k in range(1, 100):
        outcome = run_until_crash(tmp_path, k, "approve_all", task=ADAPTIVE, rounds=6, count=3)
        if outcome is None:
            break
        fake, job, operation = outcome
        crashed_after[operation] += 1
        assert max(settled(fake, "ApproveAssignment").values()) == 1
        assert set(extensions(fake).values()) <= {1}
        # No HIT grew past max_workers, and every approved answer reached the job's outputs.
        assert max(hit.max_assignments for hit in fake.hits.values()) <= 5
        stored = stored_answers(job)
        approved = Counter(a.hit_id for a in fake.assignments.values() if a.status == "Approved")
        by_hit = {e["hit"]: object_id for object_id, e in job.record.backend_state["hits"].items()}
        assert {by_hit[h]: n for h, n in approved.items()} == {o: len(w) for o, w in stored.items()}
    assert crashed_after["CreateAdditionalAssignmentsForHIT"] >= 1 and crashed_after["ApproveAssignment"] >= 3
