"""`labeljob launch --dry-run --format json` for Ground Truth: the printed request passes the service
model's full constraints for every workforce in every region of the ARN table, and no AWS call is
made at all (every AWS endpoint points at the fake, which records anything it receives)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from orchestrator.backends.groundtruth.arns import LAMBDA_ACCOUNTS
from orchestrator.cli.app import app
from orchestrator.jobs import Counters, JobRecord, JobStore
from orchestrator.service_model import validate_request
from orchestrator.spec import parse_spec
from orchestrator.storage import LocalStore
from tests.fakes.groundtruth import FakeGroundTruth

ACCOUNT = "123456789012"


@pytest.fixture
def tripwire(monkeypatch):
    """Every AWS endpoint is the fake: any request at all, to any service, is recorded."""
    with FakeGroundTruth() as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL", fake.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", fake.url)
        yield fake


def write_spec(tmp_path, workforce: str, region: str, **extra) -> str:
    vendor = f"arn:aws:sagemaker:{region}:{ACCOUNT}:workteam/vendor-crowd/acme"
    teams = {
        "private": 'type = "private"\nteam = "my-team"\n',
        "vendor": f'type = "vendor"\nteam = "{vendor}"\n',
        "public": 'type = "public"\nprice_usd = 0.036\n',
    }
    classifiers = '["FreeOfPersonallyIdentifiableInformation"]' if workforce == "public" else "[]"
    text = f"""
name = "street-objects-001"
backend = "groundtruth"
labels = ["car", "pedestrian"]
label_attribute = "{extra.get("attribute", "bbox")}"
input_manifest = "s3://sagemaker-data/manifests/train.manifest"
output = "s3://sagemaker-data/labeling/"

[task]
title = "Draw a box around every car and pedestrian"
description = "Tight boxes, one per object"
keywords = ["image", "bounding box"]
workers_per_object = 5
time_limit = "5m"
lifetime = "{"12h" if workforce == "public" else "2d"}"

[workforce]
{teams[workforce]}
[groundtruth]
role_arn = "arn:aws:iam::{ACCOUNT}:role/GroundTruthExecution"
content_classifiers = {classifiers}
"""
    path = tmp_path / f"{workforce}-{region}.toml"
    path.write_text(text)
    return str(path)


def dry_run(*args: str) -> dict:
    result = CliRunner().invoke(app, ["--format", "json", *args, "--dry-run"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def create_request(plan: dict) -> dict:
    (request,) = [r for r in plan["requests"] if r["operation"] == "sagemaker:CreateLabelingJob"]
    return request["params"]


@pytest.mark.parametrize("workforce", ["private", "vendor", "public"])
def test_dry_run_request_passes_the_service_model_in_every_region(tmp_path, tripwire, workforce):
    for region, lambda_account in LAMBDA_ACCOUNTS.items():
        plan = dry_run("--region", region, "launch", write_spec(tmp_path, workforce, region))
        params = create_request(plan)
        assert validate_request("sagemaker", "CreateLabelingJob", params) == [], (workforce, region)
        human = params["HumanTaskConfig"]
        lambdas = f"arn:aws:lambda:{region}:{lambda_account}:function:"
        assert human["PreHumanTaskLambdaArn"] == lambdas + "PRE-BoundingBox"
        assert (
            human["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"]
            == lambdas + "ACS-BoundingBox"
        )
        assert f":sagemaker:{region}:" in human["WorkteamArn"]
        assert ("PublicWorkforceTaskPrice" in human) == (workforce == "public")
    assert tripwire.requests == []


def test_dry_run_prints_the_files_it_would_write(tmp_path, tripwire):
    plan = dry_run("launch", write_spec(tmp_path, "private", "us-east-1"))
    params = create_request(plan)
    files = {r["uri"]: r["body"] for r in plan["requests"] if r["operation"] == "s3:PutObject"}
    labels = files[params["LabelCategoryConfigS3Uri"]]
    assert labels == {"document-version": "2018-11-28", "labels": [{"label": "car"}, {"label": "pedestrian"}]}
    template = files[params["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"]]
    assert "{{ task.input.taskObject | grant_read_access }}" in template
    # A local workspace: Ground Truth's inputs go beside the job's outputs.
    assert (
        params["LabelCategoryConfigS3Uri"]
        == "s3://sagemaker-data/labeling/street-objects-001/labeljob-inputs/label-categories.json"
    )
    assert plan["estimate"]["total_usd"] > 0
    assert tripwire.requests == []


def test_dry_run_with_an_s3_workspace_puts_the_inputs_beside_the_record(tmp_path, tripwire):
    spec = write_spec(tmp_path, "private", "us-east-1")
    params = create_request(dry_run("--workspace", "s3://sagemaker-ws/labeljob", "launch", spec))
    assert (
        params["LabelCategoryConfigS3Uri"]
        == "s3://sagemaker-ws/labeljob/jobs/street-objects-001/label-categories.json"
    )
    assert tripwire.requests == []


def test_dry_run_of_an_adjustment_job(tmp_path, tripwire, monkeypatch):
    workspace = tmp_path / "ws"
    earlier = parse_spec(
        {
            "name": "first-pass",
            "backend": "groundtruth",
            "labels": ["car", "pedestrian"],
            "input_manifest": "s3://sagemaker-data/in.manifest",
            "output": "s3://sagemaker-data/labeling/",
            "workforce": {"type": "private", "team": "my-team"},
            "groundtruth": {"role_arn": f"arn:aws:iam::{ACCOUNT}:role/GroundTruthExecution"},
        }
    )
    now = datetime.now(UTC)
    output = "s3://sagemaker-data/labeling/first-pass/manifests/output/output.manifest"
    JobStore(LocalStore(workspace)).create(
        JobRecord(
            name="first-pass",
            backend="groundtruth",
            spec=earlier.model_dump(mode="json"),
            fingerprint=earlier.fingerprint(),
            status="completed",
            created_at=now,
            updated_at=now,
            last_progress_at=now,
            counters=Counters(total=3, labeled=3),
            backend_state={"output_manifest_uri": output},
        )
    )
    spec = write_spec(tmp_path, "private", "us-east-1", attribute="bbox-adjusted")
    plan = dry_run("--workspace", str(workspace), "launch", spec, "--adjust-from", "first-pass")
    params = create_request(plan)
    assert validate_request("sagemaker", "CreateLabelingJob", params) == []
    assert params["HumanTaskConfig"]["PreHumanTaskLambdaArn"].endswith(":function:PRE-AdjustmentBoundingBox")
    acs = params["HumanTaskConfig"]["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"]
    assert acs.endswith(":function:ACS-AdjustmentBoundingBox")
    filtered = params["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    assert filtered.endswith("/labeljob-inputs/input.manifest")
    template = next(r["body"] for r in plan["requests"] if r.get("uri", "").endswith("template.liquid.html"))
    assert "initial-value='" in template and "task.input.manifestLine.bbox.annotations" in template
    assert tripwire.requests == []

    same_attribute = write_spec(tmp_path, "vendor", "us-east-1")
    result = CliRunner().invoke(
        app,
        ["--workspace", str(workspace), "launch", same_attribute, "--adjust-from", "first-pass", "--dry-run"],
    )
    assert result.exit_code == 1 and "label_attribute" in result.output


@pytest.mark.parametrize("workforce", ["private", "public"])
def test_launch_warns_on_the_public_workforce_only(tmp_path, tripwire, workforce):
    spec = write_spec(tmp_path, workforce, "us-east-1")
    result = CliRunner().invoke(app, ["--format", "json", "launch", str(spec), "--dry-run"])
    assert result.exit_code == 0, result.output
    warned = "Mechanical Turk closed permanently on 2026-09-30" in result.stderr
    assert warned == (workforce == "public")
    assert ('backend = "portal"' in result.stderr) == (workforce == "public")
