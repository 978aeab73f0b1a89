"""Ground Truth end to end against the fake service and a moto S3 server, both on loopback:
build a manifest, launch, poll until done, augmented manifest; idempotent re-launch, a name clash,
throttling, a failed job, a stopped job, a wait that times out, a chained adjustment job, and a
follow-up job on the objects an adaptive job left unsettled."""

from __future__ import annotations

import csv
import io
import json

import boto3
import pytest
from typer.testing import CliRunner

from orchestrator.backends.groundtruth.backend import GroundTruthBackend
from orchestrator.backends.groundtruth.chaining import filter_line
from orchestrator.cli.app import app
from orchestrator.errors import BackendError
from orchestrator.iam_policy import all_actions, iam_action
from orchestrator.jobs import FOLLOWUP_ID_KEY, JobStore, finish_job, launch_job, poll_job, read_items
from orchestrator.spec import load_spec
from orchestrator.storage import open_store

# Fixtures: moto_url (session), aws (moto for every service), groundtruth (the fake).
from tests.fakes.groundtruth import FakeGroundTruth

BUCKET = "sagemaker-e2e"
WORKSPACE = f"s3://{BUCKET}/labeljob"
N_IMAGES = 6
NAME = "street-objects-001"


@pytest.fixture
def s3(groundtruth):
    """The moto bucket with a few images, as the product sees it."""
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    for i in range(N_IMAGES):
        body = b"\xff\xd8\xff\xe0" + bytes([i]) * 64  # distinct bytes: the builder de-duplicates by ETag
        client.put_object(Bucket=BUCKET, Key=f"images/img_{i:04d}.jpg", Body=body)
    return client


def run(*args: str):
    return CliRunner().invoke(app, ["--workspace", WORKSPACE, "--format", "json", *args])


def write_spec(tmp_path, name: str = NAME, attribute: str = "bbox", tables: str = "", **task) -> str:
    settings = {"workers_per_object": 5, **task}
    task_lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
name = "{name}"
backend = "groundtruth"
labels = ["pedestrian", "car"]
label_attribute = "{attribute}"
input_manifest = "s3://{BUCKET}/manifests/input.manifest"
output = "s3://{BUCKET}/labeling/"

[task]
title = "Draw a box around every pedestrian"
description = "Tight boxes, one per person"
{task_lines}
[workforce]
type = "private"
team = "street-team"

[groundtruth]
role_arn = "arn:aws:iam::123456789012:role/GroundTruthExecution"
{tables}"""
    )
    return str(path)


def build_manifest() -> None:
    result = run("manifest", "build", f"s3://{BUCKET}/images", "--out", f"s3://{BUCKET}/manifests/")
    assert result.exit_code == 0, result.output


def launch(spec: str, *args: str):
    result = run("launch", spec, "--yes", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def read_lines(s3, key: str) -> list[dict]:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def test_build_launch_wait_writes_the_augmented_manifest(tmp_path, s3, groundtruth):
    groundtruth.advance_per_describe = 600
    build_manifest()
    row = launch(write_spec(tmp_path))
    assert row["created"] is True and row["status"] == "in_progress"

    result = run("wait", NAME, "--interval", "0.01", "--timeout", "30")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["status"] == "completed" and status["labeled"] == status["total"] == N_IMAGES

    job = f"labeling/{NAME}/"
    responses = keys(s3, job + "annotations/worker-response/iteration-1/")
    assert sorted({k.split("/")[-2] for k in responses}) == [str(i) for i in range(N_IMAGES)]
    response = json.loads(s3.get_object(Bucket=BUCKET, Key=responses[0])["Body"].read())
    assert len(response["answers"]) == 5
    # The element name in the Ground Truth rendering.
    answer = response["answers"][0]["answerContent"]["boundingBox"]
    assert answer["inputImageProperties"] == {"height": 720, "width": 1280}
    assert keys(s3, job + "annotations/consolidated-annotation/consolidation-response/iteration-1/")

    lines = read_lines(s3, job + "manifests/output/output.manifest")
    assert len(lines) == N_IMAGES
    for line in lines:
        assert line["source-ref"].startswith(f"s3://{BUCKET}/images/")
        assert line["bbox"]["image_size"] == [{"width": 1280, "height": 720, "depth": 3}]
        metadata = line["bbox-metadata"]
        assert metadata["type"] == "groundtruth/object-detection"
        assert len(metadata["objects"]) == len(line["bbox"]["annotations"])
        assert set(metadata["class-map"].values()) <= {"pedestrian"}
    assert any(line["bbox"]["annotations"] for line in lines)

    record = json.loads(s3.get_object(Bucket=BUCKET, Key=f"labeljob/jobs/{NAME}/job.json")["Body"].read())
    assert record["outputs"]["manifest"] == f"s3://{BUCKET}/{job}manifests/output/output.manifest"
    assert record["backend_state"]["groundtruth_status"] == "Completed"
    assert f"labeljob/jobs/{NAME}/label-categories.json" in keys(s3, "labeljob/")
    assert len(groundtruth.calls("CreateLabelingJob")) == 1


def test_relaunch_with_the_same_spec_creates_nothing(tmp_path, s3, groundtruth):
    build_manifest()
    spec = write_spec(tmp_path)
    assert launch(spec)["created"] is True
    again = launch(spec)
    assert again["created"] is False and again["name"] == NAME
    assert len(groundtruth.calls("CreateLabelingJob")) == 1


def test_a_name_clash_with_a_different_spec_shows_the_difference(tmp_path, s3, groundtruth):
    build_manifest()
    launch(write_spec(tmp_path))
    result = run("launch", write_spec(tmp_path, workers_per_object=3), "--yes")
    assert result.exit_code == 1, result.output
    assert '-    "workers_per_object": 5' in result.output and '+    "workers_per_object": 3' in result.output
    assert len(groundtruth.calls("CreateLabelingJob")) == 1


def test_throttling_twice_then_success(tmp_path, s3, groundtruth):
    build_manifest()
    groundtruth.fail_next("CreateLabelingJob", times=2, code="ThrottlingException")
    assert launch(write_spec(tmp_path))["created"] is True
    assert len(groundtruth.calls("CreateLabelingJob")) == 3
    assert list(groundtruth.jobs) == [NAME]


def test_a_failed_job_reports_its_reason(tmp_path, s3, groundtruth):
    build_manifest()
    launch(write_spec(tmp_path))
    groundtruth.fail_job(NAME, "ClientError: the execution role cannot read the manifest")
    result = run("wait", NAME, "--interval", "0.01", "--timeout", "30")
    assert result.exit_code == 3, result.output
    assert "failed: ClientError: the execution role cannot read the manifest" in result.output
    status = json.loads(run("status", NAME).stdout)
    assert status["status"] == "failed" and status["failure_reason"].startswith("ClientError")


def test_a_stopped_job_keeps_its_partial_output(tmp_path, s3, groundtruth):
    build_manifest()
    launch(write_spec(tmp_path))
    groundtruth.advance(60 + 2 * 30)  # two objects answered
    result = run("stop", NAME)
    assert result.exit_code == 0, result.output
    assert len(groundtruth.calls("StopLabelingJob")) == 1
    result = run("wait", NAME, "--interval", "0.01", "--timeout", "30")
    assert result.exit_code == 3 and "stopped" in result.output
    lines = read_lines(s3, f"labeling/{NAME}/manifests/output/output.manifest")
    assert sum("bbox" in line for line in lines) == 2
    assert run("stop", NAME).exit_code == 0  # stopping an ended job is fine


def test_wait_timing_out_exits_4(tmp_path, s3, groundtruth):
    build_manifest()
    launch(write_spec(tmp_path))
    result = run("wait", NAME, "--interval", "0.05", "--timeout", "0.2")
    assert result.exit_code == 4, result.output
    assert "still in_progress" in result.output


def test_the_job_layer_flow_and_the_iam_actions_it_needs(tmp_path, s3, groundtruth):
    """launch_job / poll_job without the CLI (finish=None); every call is covered by iam_policy."""
    build_manifest()
    session = boto3.Session(region_name="us-east-1")
    calls: list[tuple[str, str]] = []
    session.events.register(
        "before-call", lambda model, **_: calls.append((model.service_model.endpoint_prefix, model.name))
    )
    spec = load_spec(write_spec(tmp_path))
    jobs = JobStore(open_store(WORKSPACE, session))
    backend = GroundTruthBackend(session, jobs.workspace)
    outcome = launch_job(spec, backend, jobs, read_items(spec, session))
    assert outcome.record.backend_state["labeling_job_arn"].endswith(f":labeling-job/{NAME}")
    assert poll_job(NAME, backend, jobs).status == "in_progress"
    groundtruth.advance(60 + N_IMAGES * 30)
    record = poll_job(NAME, backend, jobs)
    assert record.status == "completed" and record.counters.labeled == N_IMAGES
    assert record.backend_state["output_manifest_uri"].endswith(f"{NAME}/manifests/output/output.manifest")
    backend.stop(spec, record)  # already completed: nothing to do

    services = {"api.sagemaker": "sagemaker", "s3": "s3", "sts": "sts"}
    needed = {iam_action(services[service], operation) for service, operation in calls} - {None}
    assert needed <= all_actions(), needed - all_actions()
    assert {"sagemaker:CreateLabelingJob", "sagemaker:DescribeLabelingJob"} <= needed


def test_an_earlier_call_that_created_the_job_is_adopted_and_a_stranger_is_not(tmp_path, s3, groundtruth):
    build_manifest()
    session = boto3.Session(region_name="us-east-1")
    spec = load_spec(write_spec(tmp_path))
    jobs = JobStore(open_store(WORKSPACE, session))
    backend = GroundTruthBackend(session, jobs.workspace)
    items = read_items(spec, session)
    record = launch_job(spec, backend, jobs, items).record
    # A crash between CreateLabelingJob and the record update: the next launch meets ResourceInUse.
    assert backend.launch(spec, items, record)["labeling_job_arn"] == record.backend_state["labeling_job_arn"]
    assert len(groundtruth.jobs) == 1

    stranger = spec.model_copy(update={"output": f"s3://{BUCKET}/elsewhere/"})
    with pytest.raises(BackendError, match="not launched from this spec"):
        backend.launch(stranger, items, record)


def test_an_adjustment_job_on_an_earlier_output(tmp_path, s3, groundtruth):
    groundtruth.advance_per_describe = 600
    build_manifest()
    launch(write_spec(tmp_path))
    assert run("wait", NAME, "--interval", "0.01", "--timeout", "30").exit_code == 0

    spec = write_spec(tmp_path, name="street-objects-002", attribute="bbox-adjusted")
    result = run("launch", spec, "--yes", "--adjust-from", NAME)
    assert result.exit_code == 0, result.output
    (request,) = groundtruth.calls("CreateLabelingJob")[1:]
    assert request["HumanTaskConfig"]["PreHumanTaskLambdaArn"].endswith(":function:PRE-AdjustmentBoundingBox")
    manifest = request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    assert manifest == f"{WORKSPACE}/jobs/street-objects-002/input.manifest"
    assert run("wait", "street-objects-002", "--interval", "0.01", "--timeout", "30").exit_code == 0
    lines = read_lines(s3, "labeling/street-objects-002/manifests/output/output.manifest")
    assert len(lines) == N_IMAGES
    assert all(
        line["bbox-adjusted-metadata"]["adjustment-status"] in ("adjusted", "unadjusted") for line in lines
    )
    assert all("bbox" in line for line in lines)  # the earlier labels pass through


def test_classes_removed_from_the_labels_are_stripped_before_chaining():
    line = {
        "source-ref": "s3://b/1.jpg",
        "bbox": {
            "image_size": [{"width": 10, "height": 10, "depth": 3}],
            "annotations": [
                {"class_id": 0, "left": 1, "top": 1, "width": 2, "height": 2},
                {"class_id": 1, "left": 5, "top": 5, "width": 2, "height": 2},
            ],
        },
        "bbox-metadata": {
            "objects": [{"confidence": 0.9}, {"confidence": 0.8}],
            "class-map": {"0": "car", "1": "pedestrian"},
            "type": "groundtruth/object-detection",
        },
    }
    filtered = filter_line(line, "bbox", ["pedestrian", "cyclist"])
    assert filtered["bbox"]["annotations"] == [{"class_id": 0, "left": 5, "top": 5, "width": 2, "height": 2}]
    assert filtered["bbox-metadata"]["objects"] == [{"confidence": 0.8}]
    assert filtered["bbox-metadata"]["class-map"] == {"0": "pedestrian"}
    unlabeled = {"source-ref": "s3://b/2.jpg"}
    assert filter_line(unlabeled, "bbox", ["pedestrian"]) == unlabeled


def test_the_scheduled_poll_handler_polls_every_unfinished_job(tmp_path, s3, groundtruth, monkeypatch):
    from orchestrator.lambdas import poll_handler

    build_manifest()
    launch(write_spec(tmp_path))
    groundtruth.advance(60 + N_IMAGES * 30)
    monkeypatch.setenv("LABELJOB_WORKSPACE", WORKSPACE)
    assert poll_handler({}, None) == {NAME: "completed"}
    assert poll_handler({}, None) == {}  # ended and collected: nothing left to poll


def test_the_fake_rejects_what_the_service_model_rejects(groundtruth):
    sm = boto3.client("sagemaker", region_name="us-east-1")
    with pytest.raises(sm.exceptions.ClientError, match="ValidationException"):
        sm.describe_labeling_job(LabelingJobName="not_valid")
    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.describe_labeling_job(LabelingJobName="missing")
    assert isinstance(groundtruth, FakeGroundTruth)


def test_the_fake_serves_lists_deletes_and_random_faults(groundtruth):
    sm = boto3.client("sagemaker", region_name="us-east-1")
    member = {"CognitoMemberDefinition": {"UserPool": "us-east-1_abc", "UserGroup": "g", "ClientId": "c"}}
    sm.create_workteam(WorkteamName="team-a", Description="a", MemberDefinitions=[member])
    assert [t["WorkteamName"] for t in sm.list_workteams()["Workteams"]] == ["team-a"]
    assert sm.delete_workteam(WorkteamName="team-a")["Success"] is True
    assert sm.list_labeling_jobs()["LabelingJobSummaryList"] == []

    groundtruth.fail_rate("ListWorkteams", 0.5, code="ServiceUnavailable", status=503)
    for _ in range(5):  # botocore retries the 503s
        assert sm.list_workteams()["Workteams"] == []
    assert len(groundtruth.calls("ListWorkteams")) > 6


# ------------------------------------------------------------------------- follow-up jobs

MORE = "street-objects-more"
ADAPTIVE = "[task.adaptive]\nmin_workers = 3\nmax_workers = 5\n"


def run_adaptive_job(tmp_path, groundtruth, tables: str = ADAPTIVE) -> None:
    """The earlier job: three answers per object, of at most five."""
    groundtruth.advance_per_describe = 600
    build_manifest()
    launch(write_spec(tmp_path, workers_per_object=3, tables=tables))
    assert run("wait", NAME, "--interval", "0.01", "--timeout", "30").exit_code == 0


def snapshot(s3) -> dict[str, bytes]:
    return {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys(s3, "")}


def test_a_follow_up_of_a_job_that_has_not_ended_and_has_no_rule_is_refused(tmp_path, s3, groundtruth):
    build_manifest()
    launch(write_spec(tmp_path, workers_per_object=2))
    before = snapshot(s3)
    result = run(
        "launch", write_spec(tmp_path, name=MORE, workers_per_object=1), "--dry-run", "--more-from", NAME
    )
    assert result.exit_code == 1, result.output
    assert f"job {NAME} is still in_progress" in result.output
    assert "task.adaptive" in result.output and "neither this spec nor job" in result.output
    assert snapshot(s3) == before and len(groundtruth.calls("CreateLabelingJob")) == 1


def test_a_follow_up_when_every_object_is_settled_launches_nothing(tmp_path, s3, groundtruth):
    # A rule that tolerates any edges, labels and support settles every object.
    lenient = "edge_tolerance = 1.0\nsupport_margin = 0.0\nmin_label_share = 0.0\n"
    run_adaptive_job(tmp_path, groundtruth, tables=ADAPTIVE + lenient)
    before = snapshot(s3)
    result = run(
        "launch", write_spec(tmp_path, name=MORE, workers_per_object=1), "--yes", "--more-from", NAME
    )
    assert result.exit_code == 1, result.output
    assert f"every object of job {NAME} is settled" in result.output
    assert snapshot(s3) == before and len(groundtruth.calls("CreateLabelingJob")) == 1


def test_a_crash_between_launching_the_follow_up_and_recording_it(tmp_path, s3, groundtruth, monkeypatch):
    run_adaptive_job(tmp_path, groundtruth)
    spec = write_spec(tmp_path, name=MORE, workers_per_object=1)
    update = JobStore.update

    def crash_on_the_follow_up(self, name, change):
        if name == MORE:
            raise RuntimeError("crashed after CreateLabelingJob")
        return update(self, name, change)

    monkeypatch.setattr(JobStore, "update", crash_on_the_follow_up)
    assert run("launch", spec, "--yes", "--more-from", NAME).exit_code == 1
    assert len(groundtruth.jobs) == 2
    monkeypatch.setattr(JobStore, "update", update)

    row = launch(spec, "--more-from", NAME)  # resumes the launching record and adopts the job
    assert row["created"] is False and row["status"] == "in_progress"
    assert len(groundtruth.jobs) == 2 and len(groundtruth.calls("CreateLabelingJob")) == 3
    assert launch(spec, "--more-from", NAME)["created"] is False  # recorded: nothing is called
    assert len(groundtruth.calls("CreateLabelingJob")) == 3


def test_a_follow_up_on_the_unsettled_objects_is_consolidated_with_the_earlier_answers(
    tmp_path, s3, groundtruth
):
    run_adaptive_job(tmp_path, groundtruth, tables=ADAPTIVE + "edge_tolerance = 0.25\n")
    # The objects `labeljob consolidate --needs-more` finds unsettled are the follow-up's, in order.
    needs = tmp_path / "needs-more.jsonl"
    result = run(
        "consolidate", f"s3://{BUCKET}/labeling/{NAME}/", "--out", str(tmp_path / "out.manifest"),
        "--labels", f"{WORKSPACE}/jobs/{NAME}/label-categories.json",
        "--input-manifest", f"s3://{BUCKET}/manifests/input.manifest",
        "--needs-more", str(needs), "--min-workers", "3", "--max-workers", "5", "--edge-tolerance", "0.25",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    unsettled = [json.loads(line)["datasetObjectId"] for line in needs.read_text().splitlines()]
    assert 0 < len(unsettled) < N_IMAGES, needs.read_text()
    inputs = read_lines(s3, "manifests/input.manifest")

    spec = write_spec(tmp_path, name=MORE, workers_per_object=1)
    before, calls = snapshot(s3), len(groundtruth.requests)
    result = run("launch", spec, "--dry-run", "--more-from", NAME)
    assert result.exit_code == 0, result.output
    put_manifest, put_labels, put_template, create = json.loads(result.stdout)["requests"]
    uri = f"{WORKSPACE}/jobs/{MORE}/input.manifest"
    expected = [{**inputs[int(i)], FOLLOWUP_ID_KEY: i} for i in unsettled]
    assert put_manifest == {"operation": "s3:PutObject", "uri": uri, "body": expected}
    assert put_labels["uri"].endswith(f"/jobs/{MORE}/label-categories.json")
    assert create["operation"] == "sagemaker:CreateLabelingJob"
    params = create["params"]
    assert params["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"] == uri
    assert params["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"] == 1
    assert params["HumanTaskConfig"]["PreHumanTaskLambdaArn"].endswith(":function:PRE-BoundingBox")
    assert snapshot(s3) == before and len(groundtruth.requests) == calls  # it read S3 only

    assert launch(spec, "--more-from", NAME)["total"] == len(unsettled)
    assert groundtruth.calls("CreateLabelingJob")[1] == params
    assert read_lines(s3, f"labeljob/jobs/{MORE}/input.manifest") == expected
    assert run("wait", MORE, "--interval", "0.01", "--timeout", "30").exit_code == 0

    # Every earlier object once, in the earlier input's order, voted on both jobs' answers.
    combined = read_lines(s3, f"labeling/{MORE}/manifests/output/labeljob.manifest")
    assert [line["source-ref"] for line in combined] == [line["source-ref"] for line in inputs]
    assert all(FOLLOWUP_ID_KEY not in line and "bbox-metadata" in line for line in combined)
    answered: dict[str, set] = {}  # (earlier object id, worker) pairs per job, from the raw responses
    for job, ids in ((NAME, None), (MORE, unsettled)):
        prefix = f"labeling/{job}/annotations/worker-response/"
        answered[job] = set()
        for key in keys(s3, prefix):
            object_id = key[len(prefix) :].split("/")[1]
            body = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            answered[job] |= {
                (ids[int(object_id)] if ids else object_id, a["workerId"]) for a in body["answers"]
            }
    pairs = answered[NAME] | answered[MORE]
    assert len(answered[NAME]) == 3 * N_IMAGES and len(pairs) > len(answered[NAME])
    report = s3.get_object(Bucket=BUCKET, Key=f"labeling/{MORE}/reports/workers.csv")["Body"].read().decode()
    rows = csv.DictReader(io.StringIO(report))
    assert sum(int(row["answers"]) for row in rows) == len(pairs)
    record = json.loads(run("status", MORE).stdout)
    assert record["output_manifest"] == f"s3://{BUCKET}/labeling/{MORE}/manifests/output/labeljob.manifest"

    # Finishing again (a crash before the outputs were recorded) writes nothing new; a poll nothing.
    after = snapshot(s3)
    session = boto3.Session(region_name="us-east-1")
    jobs = JobStore(open_store(WORKSPACE, session))
    finished = jobs.load(MORE)[0]
    finish_job(finished.job_spec, finished, jobs, boto3_session=session)
    assert snapshot(s3) == after
    assert run("poll", MORE).exit_code == 0 and snapshot(s3) == after
