"""The job layer every backend shares: records, idempotent launch, polling, waiting."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from orchestrator.consolidation import Box, ObjectAnswers, WorkerAnswer
from orchestrator.errors import InputError, JobFailed, NotFound, PreconditionFailed, SpecError, WaitTimedOut
from orchestrator.jobs import (
    CostEstimate,
    JobStore,
    LaunchPlan,
    ManifestItem,
    PollResult,
    launch_job,
    new_record,
    poll_job,
    status_row,
    stuck_hint,
    utcnow,
    wait_job,
)
from orchestrator.outputs import WORKER_RESPONSE_PREFIX
from orchestrator.spec import parse_spec
from orchestrator.storage import LocalStore, open_store


class RecordingBackend:
    """A backend that records its calls and answers polls from a script of PollResults."""

    name = "portal"

    def __init__(self, polls: list[PollResult] | None = None, problems=None, refuse_items=None) -> None:
        self.calls: list[str] = []
        self.polls = list(polls or [])
        self.problems = problems or []
        self.refuse_items = refuse_items

    def validate(self, spec):
        return self.problems

    def check_items(self, spec, items):
        if self.refuse_items:
            raise self.refuse_items

    def estimate(self, spec, n_objects):
        return CostEstimate([])

    def plan(self, spec, items, record):
        return LaunchPlan(requests=[], estimate=CostEstimate([]))

    def launch(self, spec, items, record):
        self.calls.append("launch")
        return {"launched_items": len(items)}

    def poll(self, spec, record):
        self.calls.append("poll")
        return self.polls.pop(0)

    def stop(self, spec, record):
        self.calls.append("stop")


def make_spec(tmp_path, **changes):
    data = {
        "name": "street-001",
        "labels": ["car", "pedestrian"],
        "input_manifest": str(tmp_path / "in.manifest"),
        "output": str(tmp_path / "out"),
    }
    data.update(changes)
    return parse_spec(data)


ITEMS = [ManifestItem(str(i), f"s3://b/img{i}.jpg", {"source-ref": f"s3://b/img{i}.jpg"}) for i in range(3)]


@pytest.fixture
def jobs(tmp_path):
    return JobStore(LocalStore(tmp_path / "workspace"))


def test_launch_twice_with_the_same_spec_launches_once(tmp_path, jobs):
    backend = RecordingBackend()
    spec = make_spec(tmp_path)
    first = launch_job(spec, backend, jobs, ITEMS)
    second = launch_job(spec, backend, jobs, ITEMS)
    assert backend.calls == ["launch"]
    assert first.created and not second.created
    assert second.record.status == "in_progress"
    assert second.record.backend_state == {"launched_items": 3}


def test_same_name_with_another_spec_is_an_error_showing_the_difference(tmp_path, jobs):
    backend = RecordingBackend()
    launch_job(make_spec(tmp_path), backend, jobs, ITEMS)
    with pytest.raises(SpecError) as err:
        launch_job(make_spec(tmp_path, labels=["car", "bicycle"]), backend, jobs, ITEMS)
    assert err.value.problems[0][0] == "name"
    assert '"bicycle"' in err.value.message and '"pedestrian"' in err.value.message
    assert backend.calls == ["launch"]


def test_names_differing_only_in_case_are_the_same_job(tmp_path, jobs):
    backend = RecordingBackend()
    launch_job(make_spec(tmp_path), backend, jobs, ITEMS)
    with pytest.raises(SpecError):
        launch_job(make_spec(tmp_path, name="STREET-001"), backend, jobs, ITEMS)


def test_backend_problems_stop_the_launch_before_any_call(tmp_path, jobs):
    backend = RecordingBackend(problems=[("workforce.price_usd", "not an allowed price")])
    with pytest.raises(SpecError, match="workforce.price_usd"):
        launch_job(make_spec(tmp_path), backend, jobs, ITEMS)
    assert backend.calls == [] and jobs.names() == []


def test_a_refused_manifest_leaves_no_record_behind(tmp_path, jobs):
    backend = RecordingBackend(refuse_items=InputError("in.manifest: 1 source-ref(s) outside the bucket"))
    with pytest.raises(InputError, match="outside the bucket"):
        launch_job(make_spec(tmp_path), backend, jobs, ITEMS)
    assert backend.calls == [] and jobs.names() == []


def test_a_launch_that_crashed_is_resumed(tmp_path, jobs):
    class CrashingBackend(RecordingBackend):
        def launch(self, spec, items, record):
            super().launch(spec, items, record)
            if len(self.calls) == 1:
                raise RuntimeError("crash half-way")
            return {"resumed": True}

    backend = CrashingBackend()
    spec = make_spec(tmp_path)
    with pytest.raises(RuntimeError):
        launch_job(spec, backend, jobs, ITEMS)
    assert jobs.load(spec.name)[0].status == "launching"
    assert jobs.load(spec.name)[0].counters.total == len(ITEMS)
    outcome = launch_job(spec, backend, jobs, ITEMS[:2])  # resumed with a corrected manifest
    assert outcome.record.status == "in_progress" and outcome.record.backend_state == {"resumed": True}
    assert outcome.record.counters.total == 2
    assert backend.calls == ["launch", "launch"]


def test_update_refuses_to_overwrite_a_record_changed_in_between(tmp_path, jobs):
    spec = make_spec(tmp_path)
    jobs.create(new_record(spec, 3))
    record, etag = jobs.load(spec.name)
    jobs.update(spec.name, lambda r: setattr(r, "failure_reason", "first writer"))
    with pytest.raises(PreconditionFailed):
        jobs.workspace.put_if_match(jobs.key(spec.name), b"{}", etag)
    assert jobs.load(spec.name)[0].failure_reason == "first writer"


def test_concurrent_updates_are_all_applied(tmp_path, jobs):
    spec = make_spec(tmp_path)
    jobs.create(new_record(spec, 0))

    def bump(i: int) -> None:
        jobs.update(spec.name, lambda r: r.backend_state.update({f"writer{i}": i}))

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert jobs.load(spec.name)[0].backend_state == {f"writer{i}": i for i in range(6)}


def test_create_twice_fails_and_missing_job_names_the_workspace(tmp_path, jobs):
    spec = make_spec(tmp_path)
    jobs.create(new_record(spec, 1))
    with pytest.raises(PreconditionFailed):
        jobs.create(new_record(spec, 1))
    with pytest.raises(NotFound, match="no job named 'nope'"):
        jobs.load("nope")


def test_a_corrupt_record_is_a_clear_error(tmp_path, jobs):
    jobs.workspace.put(jobs.key("broken"), b'{"name": 3}')
    with pytest.raises(InputError, match="job record is invalid"):
        jobs.load("broken")


def _answers(object_id: str) -> ObjectAnswers:
    box = Box(label="car", left=1, top=2, width=30, height=40)
    return ObjectAnswers(
        dataset_object_id=object_id,
        source_ref=f"s3://b/img{object_id}.jpg",
        answers=[WorkerAnswer(worker_id="w1", boxes=[box], submitted_at="2026-11-23T10:00:00+00:00")],
    )


def test_poll_stores_answers_and_finishes_once(tmp_path, jobs):
    spec = make_spec(tmp_path)
    backend = RecordingBackend(
        polls=[
            PollResult(status="in_progress", total=3, labeled=1, answers=[_answers("0")]),
            PollResult(status="in_progress", total=3, labeled=1, answers=[_answers("0")]),
            PollResult(status="completed", total=3, labeled=3, answers=[_answers("1"), _answers("2")]),
        ]
    )
    launch_job(spec, backend, jobs, ITEMS)
    finished = []

    def finish(spec_, record):
        finished.append(record.status)
        return {"manifest": "out.manifest"}

    for _ in range(3):
        record = poll_job(spec.name, backend, jobs, finish=finish)
    assert record.status == "completed" and record.outputs == {"manifest": "out.manifest"}
    stored = sorted(
        info.key for info in open_store(tmp_path / "out" / spec.name).list(WORKER_RESPONSE_PREFIX)
    )
    # The repeated answer for object 0 rewrote the same file instead of adding one.
    assert [key.split("/")[3] for key in stored] == ["0", "1", "2"]
    # A poll of a finished job asks the backend nothing and finishes nothing again.
    assert poll_job(spec.name, backend, jobs, finish=finish).outputs == {"manifest": "out.manifest"}
    assert backend.calls.count("poll") == 3 and finished == ["completed"]


def test_failed_job_keeps_its_reason(tmp_path, jobs):
    spec = make_spec(tmp_path)
    backend = RecordingBackend(polls=[PollResult(status="failed", total=3, labeled=0, failure_reason="CORS")])
    launch_job(spec, backend, jobs, ITEMS)
    record = poll_job(spec.name, backend, jobs)
    assert record.status == "failed" and record.failure_reason == "CORS"
    assert status_row(record)["failure_reason"] == "CORS"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _record(tmp_path, status: str, labeled: int = 0, reason: str | None = None, outputs=None):
    record = new_record(make_spec(tmp_path), 10)
    record.status = status
    record.counters.labeled = labeled
    record.failure_reason = reason
    if outputs is None:
        outputs = {"manifest": "out.manifest"} if status == "completed" else {}
    record.outputs = outputs
    return record


def test_wait_times_out_with_exit_code_4(tmp_path):
    clock = FakeClock()
    with pytest.raises(WaitTimedOut) as err:
        wait_job(
            "j",
            lambda: _record(tmp_path, "in_progress", 4),
            timeout=60,
            interval=10,
            sleep=clock.sleep,
            clock=clock,
        )
    assert err.value.exit_code == 4 and "4/10 labeled" in err.value.message
    assert clock.now <= 60 + 1e-9
    assert clock.sleeps[0] == 10 and clock.sleeps[1] == 15  # the interval backs off


@pytest.mark.parametrize("status", ["failed", "stopped"])
def test_wait_on_a_failed_or_stopped_job_exits_3(tmp_path, status):
    clock = FakeClock()
    with pytest.raises(JobFailed) as err:
        wait_job(
            "j",
            lambda: _record(tmp_path, status, reason="ran out"),
            timeout=None,
            sleep=clock.sleep,
            clock=clock,
        )
    assert err.value.exit_code == 3 and status in err.value.message and "ran out" in err.value.message


def test_wait_returns_when_the_job_completes(tmp_path):
    clock = FakeClock()
    states = iter(["in_progress", "in_progress", "completed"])
    record = wait_job(
        "j", lambda: _record(tmp_path, next(states)), timeout=3600, sleep=clock.sleep, clock=clock
    )
    assert record.status == "completed" and len(clock.sleeps) == 2


def test_wait_returns_only_once_the_outputs_of_a_completed_job_are_written(tmp_path):
    """A poll that lost the race to end the job sees it completed while the winner still writes outputs."""
    clock = FakeClock()
    records = iter([_record(tmp_path, "completed", outputs={}), _record(tmp_path, "completed")])
    record = wait_job("j", lambda: next(records), timeout=3600, sleep=clock.sleep, clock=clock)
    assert record.outputs == {"manifest": "out.manifest"} and len(clock.sleeps) == 1


def test_stuck_hint_after_hours_without_progress(tmp_path):
    record = _record(tmp_path, "in_progress")
    assert stuck_hint(record, record.last_progress_at + timedelta(minutes=30)) is None
    hint = stuck_hint(record, record.last_progress_at + timedelta(hours=5))
    assert hint and "5.0 h" in hint and "CORS" in hint
    record.status = "completed"
    assert stuck_hint(record, utcnow() + timedelta(days=3)) is None
