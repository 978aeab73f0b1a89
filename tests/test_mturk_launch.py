"""Launching MTurk jobs against the fake: the requests, exactly-once HITs after crashes, refusals."""

from __future__ import annotations

import html
import json
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from orchestrator.backends.mturk import backend as mturk_backend
from orchestrator.backends.mturk.backend import MTurkBackend
from orchestrator.backends.mturk.client import mturk_client
from orchestrator.backends.mturk.hits import annotation, request_token
from orchestrator.backends.mturk.pool import grant
from orchestrator.cli.app import app
from orchestrator.errors import BackendError, SpecError
from orchestrator.jobs import new_record
from orchestrator.spec import parse_spec
from tests.fakes.mturk import FakeMTurk, MTurkJob, SimulatedCrash, crash_after


def hits_by_object(fake: FakeMTurk, job: MTurkJob) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for hit in fake.live_hits():
        object_id = hit.annotation.rsplit("object=", 1)[1]
        found.setdefault(object_id, []).append(hit.hit_id)
    return found


def assert_one_hit_per_object(fake: FakeMTurk, job: MTurkJob) -> None:
    found = hits_by_object(fake, job)
    assert sorted(found) == sorted(item.object_id for item in job.items)
    assert all(len(ids) == 1 for ids in found.values()), found
    recorded = {k: v["hit"] for k, v in job.record.backend_state["hits"].items()}
    assert recorded == {k: ids[0] for k, ids in found.items()}


def test_launch_creates_one_hit_type_and_one_hit_per_line(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    job = MTurkJob(fake_mturk, tmp_path, count=4, task={"workers_per_object": 3, "lifetime": "2h"})
    record = job.launch()
    assert record.status == "in_progress"
    assert fake_mturk.count("CreateHITType") == 1
    assert fake_mturk.count("CreateHITWithHITType") == 4
    assert_one_hit_per_object(fake_mturk, job)
    for call in (c for c in fake_mturk.calls if c.operation == "CreateHITWithHITType"):
        params = call.params
        object_id = params["RequesterAnnotation"].rsplit("object=", 1)[1]
        assert params["MaxAssignments"] == 3
        assert params["LifetimeInSeconds"] == 7200
        assert params["UniqueRequestToken"] == request_token(job.spec, object_id)
        assert len(params["UniqueRequestToken"]) <= 64
        assert params["RequesterAnnotation"] == annotation(job.spec, object_id)
        assert "job=pedestrians" in params["RequesterAnnotation"]
    hit = fake_mturk.live_hits()[0]
    assert "<HTMLQuestion" in hit.question and "<crowd-bounding-box" in hit.question
    assert hit.image is not None  # the fake found the presigned image among its records
    element = hit.question.split("<crowd-bounding-box", 1)[1]
    src = html.unescape(element.split('src="', 1)[1].split('"', 1)[0])
    query = parse_qs(urlsplit(src).query)
    assert src.startswith("https://")
    # lifetime 2 h + time limit 5 min + auto-approval 3 days
    assert query["X-Amz-Expires"] == [str(7200 + 300 + 3 * 86400)]


def test_launching_again_creates_nothing(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    job = MTurkJob(fake_mturk, tmp_path)
    job.launch()
    calls = len(fake_mturk.calls)
    job.restart()
    assert job.launch().status == "in_progress"
    assert len(fake_mturk.calls) == calls


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"mturk": {"sandbox": False}, "workforce": {"type": "private", "team": "crew"}},
    ],
    ids=["sandbox-public", "production-private"],
)
def test_a_crash_after_any_call_then_a_relaunch_creates_each_hit_once(
    tmp_path: Path, monkeypatch, spec: dict
) -> None:
    monkeypatch.setattr(mturk_backend, "SAVE_EVERY", 2)  # crash points between saves too
    spec = {"count": 5, **spec}
    total = None
    for k in range(1, 100):
        folder = tmp_path / f"crash-{k}"
        folder.mkdir()
        with FakeMTurk() as fake:
            monkeypatch.setenv("AWS_ENDPOINT_URL_MTURK", fake.url)
            job = MTurkJob(fake, folder, **spec)
            if job.spec.workforce.type == "private":
                pool = grant(mturk_client(job.session, sandbox=True), "crew", ["AFAKEW06"])
            crash_after(job.session, k)
            try:
                job.launch()
            except SimulatedCrash:
                pass
            else:
                total = k - 1  # no crash: the launch makes fewer than k calls
                break
            assert job.record.status == "launching"
            job.restart()
            assert job.launch().status == "in_progress"
            assert_one_hit_per_object(fake, job)
            if job.spec.workforce.type == "private":
                requirements = fake.hit_types[fake.live_hits()[0].hit_type_id]["QualificationRequirements"]
                assert requirements[-1]["QualificationTypeId"] == pool
    assert total is not None and total >= 6  # every call of the launch was a crash point


def test_a_relaunch_after_the_token_window_finds_the_hits_by_annotation(
    fake_mturk: FakeMTurk, tmp_path: Path
) -> None:
    job = MTurkJob(fake_mturk, tmp_path, count=4)
    crash_after(job.session, 3)  # CreateHITType, then two HITs that never reach the record
    with pytest.raises(SimulatedCrash):
        job.launch()
    assert "hits" not in job.record.backend_state
    fake_mturk.advance(timedelta(hours=25).total_seconds())
    job.restart()
    job.launch()
    assert fake_mturk.count("ListHITs") >= 1
    assert fake_mturk.count("CreateHITWithHITType") == 4
    assert_one_hit_per_object(fake_mturk, job)


def test_hit_already_exists_recovers_the_hit_id_from_the_message(
    fake_mturk: FakeMTurk, tmp_path: Path
) -> None:
    job = MTurkJob(fake_mturk, tmp_path, count=3)
    crash_after(job.session, 2)  # the first HIT exists, the record does not know it
    with pytest.raises(SimulatedCrash):
        job.launch()
    job.restart()
    job.launch()
    assert fake_mturk.count("CreateHITWithHITType", "AWS.MechanicalTurk.HitAlreadyExists") == 1
    assert fake_mturk.count("ListHITs") == 0
    assert_one_hit_per_object(fake_mturk, job)


def test_throttled_launch_completes_without_duplicates(
    fake_mturk: FakeMTurk, tmp_path: Path, fast_retries: None
) -> None:
    fake_mturk.faults.throttle("CreateHITWithHITType", times=4)
    fake_mturk.faults.service_faults(
        rate=0.3, operations={"CreateHITWithHITType"}, lost_response=True, seed=2
    )
    job = MTurkJob(fake_mturk, tmp_path, count=6)
    job.launch()
    assert fake_mturk.count("CreateHITWithHITType", "ThrottlingException") == 4
    assert fake_mturk.count("CreateHITWithHITType", "AWS.ServiceUnavailable") > 0
    assert_one_hit_per_object(fake_mturk, job)


def test_a_question_over_65535_bytes_is_refused_before_any_call(
    fake_mturk: FakeMTurk, tmp_path: Path
) -> None:
    instructions = tmp_path / "instructions.md"
    instructions.write_text("\n\n".join(f"Paragraph {i}: " + "draw tight boxes " * 40 for i in range(120)))
    job = MTurkJob(fake_mturk, tmp_path, task={"instructions": str(instructions)})
    with pytest.raises(BackendError, match=r"is [\d,]+ bytes; MTurk accepts at most 65,535") as caught:
        job.launch()
    assert "external" in (caught.value.hint or "")
    assert fake_mturk.calls == []


def test_external_question_points_at_the_portal(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    job = MTurkJob(
        fake_mturk,
        tmp_path,
        count=2,
        mturk={"question": "external", "external_url": "https://portal.example.com/mturk?lang=en"},
    )
    job.launch()
    hit = fake_mturk.live_hits()[1]
    url = hit.question.split("<ExternalURL>")[1].split("</ExternalURL>")[0].replace("&amp;", "&")
    assert parse_qs(urlsplit(url).query) == {"lang": ["en"], "job": ["pedestrians"], "object": ["1"]}


def test_private_pool_limits_the_hits_to_granted_workers(
    fake_mturk: FakeMTurk, tmp_path: Path, monkeypatch
) -> None:
    runner = CliRunner()
    ws = ["--workspace", str(tmp_path / "workspace"), "--format", "json"]
    job = MTurkJob(fake_mturk, tmp_path, count=2, workforce={"type": "private", "team": "crew"})
    with pytest.raises(BackendError, match="no MTurk worker pool") as missing:
        job.launch()
    assert "workforce grant" in (missing.value.hint or "")
    result = runner.invoke(
        app, [*ws, "workforce", "grant", "AFAKEW06", "AFAKEW07", "AFAKEW99", "--team", "crew"]
    )
    assert result.exit_code == 0, result.output
    granted = json.loads(result.stdout)
    result = runner.invoke(app, [*ws, "workforce", "revoke", "AFAKEW99", "--team", "crew"])
    assert result.exit_code == 0, result.output
    job.restart()
    job.launch()
    requirements = fake_mturk.hit_types[fake_mturk.live_hits()[0].hit_type_id]["QualificationRequirements"]
    assert requirements == [
        {
            "QualificationTypeId": granted["qualification_type_id"],
            "Comparator": "Exists",
            "ActionsGuarded": "DiscoverPreviewAndAccept",
        }
    ]
    fake_mturk.spam_rate = 1.0  # spammers hold no grant: they cannot even see the HITs
    fake_mturk.work()
    assert {a.worker_id for a in fake_mturk.assignments.values()} == {"AFAKEW06", "AFAKEW07"}


def test_production_launch_checks_the_balance_first(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    fake_mturk.balance = "0.50"
    job = MTurkJob(fake_mturk, tmp_path, count=4, mturk={"sandbox": False, "reward_usd": "0.10"})
    with pytest.raises(BackendError, match=r"balance is \$0\.50; this job may cost \$2\.40"):
        job.launch()
    assert [c.operation for c in fake_mturk.calls] == ["GetAccountBalance"]
    fake_mturk.balance = "2.40"
    job.restart()
    job.launch()
    assert fake_mturk.count("CreateHITWithHITType") == 4


def write_spec(tmp_path: Path, count: int, **mturk) -> Path:
    job_manifest = tmp_path / "input.manifest"
    job_manifest.write_text(
        "".join(
            json.dumps({"source-ref": f"s3://labeljob-test-images/ped/{i}.png"}) + "\n" for i in range(count)
        )
    )
    settings = "".join(f"{key} = {json.dumps(value)}\n" for key, value in mturk.items())
    spec = tmp_path / "job.toml"
    spec.write_text(
        f"""name = "dry"
backend = "mturk"
labels = ["pedestrian"]
input_manifest = "input.manifest"
output = "output"
[workforce]
type = "public"
[mturk]
{settings}"""
    )
    return spec


def test_dry_run_prints_the_requests_and_calls_nothing(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, 5, sandbox=False, reward_usd="0.10")
    result = CliRunner().invoke(
        app, ["--workspace", str(tmp_path / "ws"), "--format", "json", "launch", str(spec), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    operations = [r["operation"] for r in plan["requests"]]
    assert operations == ["GetAccountBalance", "CreateHITType"] + ["CreateHITWithHITType"] * 5
    assert plan["requests"][1]["params"]["Reward"] == "0.10"
    for request in plan["requests"][2:]:  # every Question whole, so a script can validate or replay it
        question = request["params"]["Question"]
        assert question.startswith("<HTMLQuestion") and question.endswith("</HTMLQuestion>")
        assert "bytes in all" not in question and len(question) > 1000
    assert plan["estimate"]["total_usd"] == 3.00
    assert fake_mturk.calls == []
    assert not (tmp_path / "ws").exists()


def test_launch_warns_that_mechanical_turk_has_closed(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, 2, sandbox=True)
    result = CliRunner().invoke(app, ["--workspace", str(tmp_path / "ws"), "launch", str(spec), "--yes"])
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert "closed permanently on 2026-09-30" in warning and 'backend = "portal"' in warning


def test_dry_run_table_view_shortens_each_question(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, 5, sandbox=False, reward_usd="0.10")
    result = CliRunner().invoke(app, ["--workspace", str(tmp_path / "ws"), "launch", str(spec), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("bytes in all; --format json shows it") == 5


def test_estimate_command(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, 20, sandbox=False, reward_usd="0.10", masters=True)
    result = CliRunner().invoke(app, ["--format", "json", "estimate", str(spec)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_usd"] == 13.00
    assert fake_mturk.calls == []


def base_spec(**overrides) -> dict:
    spec = {
        "name": "v",
        "backend": "mturk",
        "labels": ["pedestrian"],
        "input_manifest": "in",
        "output": "out",
        "workforce": {"type": "public"},
    }
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"task": {"time_limit": 10}}, "task.time_limit"),
        ({"task": {"lifetime": "400d"}}, "task.lifetime"),
        ({"mturk": {"auto_approve_after": "31d"}}, "mturk.auto_approve_after"),
        ({"mturk": {"reward_usd": "0.00"}}, "mturk.reward_usd"),
        ({"task": {"description": "x" * 2001}}, "task.description"),
        ({"task": {"keywords": ["k" * 600, "k" * 600]}}, "task.keywords"),
        ({"mturk": {"locales": ["usa"]}}, "mturk.locales"),
        ({"workforce": {"type": "vendor"}}, "workforce.type"),
        ({"workforce": {"type": "private"}}, "workforce.team"),
        ({"workforce": {"price_usd": 0.1}}, "workforce.price_usd"),
        ({"mturk": {"question": "external"}}, "mturk.external_url"),
        ({"mturk": {"question": "external", "external_url": "http://portal"}}, "mturk.external_url"),
        ({"mturk": {"external_url": "https://portal"}}, "mturk.external_url"),
        ({"mturk": {"review_policy": "agreement"}, "task": {"workers_per_object": 2}}, "mturk.review_policy"),
        ({"mturk": {"block_after_rejections": 3}}, "mturk.block_after_rejections"),
        ({"task": {"adaptive": {"max_workers": 10}}}, "task.adaptive.max_workers"),
    ],
)
def test_validate_names_the_key(overrides: dict, key: str) -> None:
    problems = MTurkBackend().validate(parse_spec(base_spec(**overrides)))
    assert key in [k for k, _ in problems], problems


def test_validate_accepts_the_presets_and_warns_about_big_hits() -> None:
    spec = parse_spec(
        base_spec(
            task={"workers_per_object": 12},
            mturk={"min_approval_rate": 95, "locales": ["US", "CA", "US-PA"], "masters": True},
        )
    )
    backend = MTurkBackend()
    assert backend.validate(spec) == []
    plan = backend.plan(spec, [], new_record(spec, 0))
    assert any("10 or more" in w for w in plan.warnings)
    assert any("min_approved_hits" in w for w in plan.warnings)
    requirements = plan.requests[0]["params"]["QualificationRequirements"]
    assert {"Country": "US", "Subdivision": "PA"} in requirements[1]["LocaleValues"]
    assert requirements[2] == {
        "QualificationTypeId": "2ARFPLSP75KLA8M8DH1HTEQVJT3SY6",
        "Comparator": "Exists",
    }


def test_plan_warns_when_presigned_urls_cannot_last(tmp_path: Path) -> None:
    spec = parse_spec(base_spec(task={"lifetime": "6d"}, mturk={"auto_approve_after": "3d"}))
    plan = MTurkBackend().plan(spec, [], new_record(spec, 0))
    assert any("7 days" in w for w in plan.warnings)


def test_launch_refuses_invalid_spec_through_the_job_layer(fake_mturk: FakeMTurk, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="workforce.type"):
        MTurkJob(fake_mturk, tmp_path, workforce={"type": "vendor"}).launch()


def test_doctor_states_the_closure_and_checks_the_account(fake_mturk: FakeMTurk, tmp_path: Path, s3) -> None:
    bucket = s3.client("s3", region_name="us-east-1")
    bucket.create_bucket(Bucket="labeljob-test-images")
    rule = {"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}
    bucket.put_bucket_cors(Bucket="labeljob-test-images", CORSConfiguration={"CORSRules": [rule]})
    spec = write_spec(tmp_path, 2, sandbox=True)
    result = CliRunner().invoke(app, ["--region", "us-east-1", "--format", "json", "doctor", str(spec)])
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    assert result.exit_code == 0, checks
    assert "closed permanently on 2026-09-30" in checks["mturk status"]["detail"]
    assert "labeljob portal link" in checks["mturk status"]["detail"]
    assert checks["mturk endpoint"]["status"] == "ok" and fake_mturk.url in checks["mturk endpoint"]["detail"]
    assert checks["mturk account"]["detail"] == "available balance $10000.00"
    assert checks["bucket labeljob-test-images"]["status"] == "ok"
    assert checks["question"]["status"] == "ok"
