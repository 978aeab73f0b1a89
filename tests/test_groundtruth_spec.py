"""Ground Truth spec validation: every invalid value is reported with its key, all at once, and
nothing reaches AWS while validating."""

from __future__ import annotations

import copy
import json

import boto3
import pytest
from typer.testing import CliRunner

from orchestrator.backends.groundtruth.backend import GroundTruthBackend, price_amount
from orchestrator.cli.app import app
from orchestrator.errors import SpecError
from orchestrator.jobs import new_record
from orchestrator.service_model import validate_request
from orchestrator.spec import parse_spec

ROLE = "arn:aws:iam::123456789012:role/GroundTruthExecution"
BASE = {
    "name": "street-objects-001",
    "backend": "groundtruth",
    "labels": ["car", "pedestrian"],
    "label_attribute": "bbox",
    "input_manifest": "s3://sagemaker-bucket/manifests/train.manifest",
    "output": "s3://sagemaker-bucket/labeling/",
    "task": {"title": "Box cars", "description": "Tight boxes", "keywords": ["image", "bounding box"]},
    "workforce": {"type": "private", "team": "my-team"},
    "groundtruth": {"role_arn": ROLE},
}
PUBLIC = {"type": "public", "price_usd": 0.036}
PII = ["FreeOfPersonallyIdentifiableInformation"]


@pytest.fixture(autouse=True)
def no_aws_calls(monkeypatch):
    """Any AWS API call fails the test."""
    import botocore.client

    def refuse(self, operation_name, params):
        raise AssertionError(f"unexpected AWS call {operation_name}")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)


def spec_with(changes: dict) -> dict:
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return data


def problems(data: dict, region: str = "us-east-1") -> list[tuple[str, str]]:
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        return exc.problems
    return GroundTruthBackend(boto3.Session(region_name=region)).validate(spec)


def test_valid_spec_has_no_problem():
    assert problems(spec_with({})) == []
    assert problems(spec_with({"task.keywords": []})) == []  # TaskKeywords is optional
    public = {"workforce": PUBLIC, "groundtruth.content_classifiers": PII, "task.lifetime": "12h"}
    assert problems(spec_with(public)) == []
    assert (
        problems(
            spec_with({"workforce.team": "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/t"})
        )
        == []
    )


INVALID = [
    ({"name": "street_objects"}, "name"),
    ({"name": "a" * 64}, "name"),
    ({"labels": []}, "labels"),
    ({"labels": [f"c{i}" for i in range(11)]}, "labels"),
    ({"labels": ["car", "car"]}, "labels"),
    ({"label_attribute": "bbox-metadata"}, "label_attribute"),
    ({"label_attribute": "bbox-ref"}, "label_attribute"),
    ({"label_attribute": "source"}, "label_attribute"),
    ({"label_attribute": "source-ref"}, "label_attribute"),
    ({"label_attribute": "my_boxes"}, "label_attribute"),
    ({"input_manifest": "/data/train.manifest"}, "input_manifest"),
    ({"output": "/data/out"}, "output"),
    (
        {"groundtruth.more_from": "a", "groundtruth.chain": "adjust", "groundtruth.chain_attribute": "b"},
        "groundtruth.more_from",
    ),
    ({"task.keywords": ["bounding-box"]}, "task.keywords"),
    ({"task.keywords": ["a", "b", "c", "d", "e", "f"]}, "task.keywords"),
    ({"task.keywords": ["k" * 31]}, "task.keywords"),
    ({"task.instructions": "/no/such/instructions.md"}, "task.instructions"),
    ({"task.title": "t" * 129}, "task.title"),
    ({"task.title": "bell \x07"}, "task.title"),
    ({"task.description": "d" * 256}, "task.description"),
    ({"task.workers_per_object": 10}, "task.workers_per_object"),
    ({"task.workers_per_object": 0}, "task.workers_per_object"),
    ({"task.adaptive": {"min_workers": 6}}, "task.workers_per_object"),
    ({"task.adaptive": {"max_workers": 5}}, "task.workers_per_object"),
    ({"task.time_limit": 29}, "task.time_limit"),
    ({"task.time_limit": "8h1s"}, "task.time_limit"),
    ({"task.time_limit": 28_801}, "task.time_limit"),
    ({"task.lifetime": 59}, "task.lifetime"),
    ({"task.lifetime": "31d"}, "task.lifetime"),
    ({"task.max_concurrent": 5001}, "task.max_concurrent"),
    ({"workforce.team": None}, "workforce.team"),
    ({"workforce.team": "my_team"}, "workforce.team"),
    (
        {"workforce.team": "arn:aws:sagemaker:us-east-1:123456789012:workteam/vendor-crowd/x"},
        "workforce.team",
    ),
    (
        {"workforce.team": "arn:aws:sagemaker:eu-west-1:123456789012:workteam/private-crowd/x"},
        "workforce.team",
    ),
    ({"workforce.type": "vendor", "workforce.team": "acme"}, "workforce.team"),
    ({"workforce.price_usd": 0.036}, "workforce.price_usd"),
    (
        {"workforce": {"type": "public", "price_usd": 0.05}, "groundtruth.content_classifiers": PII},
        "workforce.price_usd",
    ),
    ({"workforce": {"type": "public"}, "groundtruth.content_classifiers": PII}, "workforce.price_usd"),
    ({"workforce": PUBLIC}, "groundtruth.content_classifiers"),
    ({"workforce": PUBLIC, "groundtruth.content_classifiers": PII, "task.lifetime": "13h"}, "task.lifetime"),
    ({"workforce": {**PUBLIC, "team": "my-team"}, "groundtruth.content_classifiers": PII}, "workforce.team"),
    ({"groundtruth": None}, "groundtruth"),
    ({"groundtruth.role_arn": "arn:aws:iam::1234:role/x"}, "groundtruth.role_arn"),
    ({"groundtruth.role_arn": "GroundTruthExecution"}, "groundtruth.role_arn"),
    ({"groundtruth.region": "sa-east-1"}, "groundtruth.region"),
    ({"groundtruth.consolidation": "labeljob"}, "groundtruth.consolidation_lambda_arn"),
    (
        {"groundtruth.consolidation": "labeljob", "groundtruth.consolidation_lambda_arn": "my-fn"},
        "groundtruth.consolidation_lambda_arn",
    ),
    (
        {"groundtruth.consolidation_lambda_arn": "arn:aws:lambda:us-east-1:123456789012:function:x"},
        "groundtruth.consolidation_lambda_arn",
    ),
    ({"groundtruth.content_classifiers": ["FreeOfViolence"]}, "groundtruth.content_classifiers"),
    ({"groundtruth.per_object_fee_usd": -1}, "groundtruth.per_object_fee_usd"),
    ({"groundtruth.chain": "adjust"}, "groundtruth.chain_attribute"),
    ({"groundtruth.chain": "adjust", "groundtruth.chain_attribute": "bbox"}, "label_attribute"),
]


@pytest.mark.parametrize(("changes", "key"), INVALID, ids=[f"{k}-{i}" for i, (_, k) in enumerate(INVALID)])
def test_each_invalid_value_names_its_key(changes, key):
    found = problems(spec_with(changes))
    # A list item's problem names the item, e.g. groundtruth.content_classifiers.0.
    assert any(k == key or k.startswith(key + ".") for k, _ in found), found


def test_region_without_builtin_lambdas_names_the_region_key():
    found = problems(spec_with({}), region="sa-east-1")
    assert [k for k, _ in found] == ["groundtruth.region"]
    assert "us-east-1" in found[0][1]


def test_every_problem_is_reported_at_once():
    changes = {
        "task.keywords": ["bounding-box"],
        "task.workers_per_object": 12,
        "task.time_limit": 10,
        "task.max_concurrent": 6000,
        "workforce.price_usd": 0.05,
        "groundtruth.role_arn": "nope",
        "groundtruth.consolidation": "labeljob",
    }
    keys = {k for k, _ in problems(spec_with(changes))}
    assert keys >= {
        "task.keywords",
        "task.workers_per_object",
        "task.time_limit",
        "task.max_concurrent",
        "workforce.price_usd",
        "groundtruth.role_arn",
        "groundtruth.consolidation_lambda_arn",
    }


def test_a_service_model_violation_is_mapped_to_its_key():
    found = problems(spec_with({"task.title": "bell \x07"}))
    assert found[0][0] == "task.title"
    assert "TaskTitle" in found[0][1]


def test_more_than_1000_concurrent_tasks_is_a_warning_not_an_error():
    spec = parse_spec(spec_with({"task.max_concurrent": 2000}))
    backend = GroundTruthBackend(boto3.Session(region_name="us-east-1"))
    assert backend.validate(spec) == []
    plan = backend.plan(spec, None, new_record(spec, 0))
    assert any("AWS Support" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("price", "amount"),
    [
        (0.036, (0, 3, 6)),
        (0.048, (0, 4, 8)),
        (0.072, (0, 7, 2)),
        (0.12, (0, 12, 0)),
        (1.08, (1, 8, 0)),
        (1.2, (1, 20, 0)),
    ],
)
def test_price_amounts(price, amount):
    assert tuple(price_amount(price).values()) == amount


def test_every_allowed_price_passes_the_service_model():
    from orchestrator.backends.groundtruth.backend import ALLOWED_PRICES_USD

    for price in ALLOWED_PRICES_USD:
        data = spec_with(
            {"workforce": {"type": "public", "price_usd": price}, "groundtruth.content_classifiers": PII}
        )
        spec = parse_spec(data)
        backend = GroundTruthBackend(boto3.Session(region_name="us-east-1"))
        assert backend.validate(spec) == []
        assert validate_request("sagemaker", "CreateLabelingJob", backend.request(spec)) == []


def test_cli_reports_invalid_spec_with_keys_and_calls_nothing(tmp_path):
    data = spec_with({"task.workers_per_object": 12, "task.keywords": ["bounding-box"]})
    spec_file = tmp_path / "job.toml"
    spec_file.write_text(_toml(data))
    result = CliRunner().invoke(app, ["--format", "json", "launch", str(spec_file), "--dry-run"])
    assert result.exit_code == 1
    assert "task.workers_per_object" in result.output and "task.keywords" in result.output


def _toml(data: dict) -> str:
    """A TOML file of a spec dict (tables last, as TOML requires)."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append(f"[{key}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in value.items()))
        else:
            lines.append(f"{key} = {json.dumps(value)}\n")
    return "".join(lines) + "\n".join(tables)


def test_estimate_public_pay_and_the_fee_table():
    spec = parse_spec(spec_with({"workforce": PUBLIC, "groundtruth.content_classifiers": PII}))
    cost = GroundTruthBackend(boto3.Session(region_name="us-east-1")).estimate(spec, 60_000)
    lines = {line.item: (line.quantity, line.unit_usd) for line in cost.lines}
    assert lines["public workers: 60000 objects x 5 workers"] == (300_000, 0.036)
    assert lines["Ground Truth fee, objects 1-50000"] == (50_000, 0.08)
    assert lines["Ground Truth fee, objects 50001-60000"] == (10_000, 0.04)
    assert cost.total_usd == round(300_000 * 0.036 + 50_000 * 0.08 + 10_000 * 0.04, 2)


def test_estimate_private_with_an_overridden_fee():
    spec = parse_spec(spec_with({"groundtruth.per_object_fee_usd": 0.05}))
    cost = GroundTruthBackend(boto3.Session(region_name="us-east-1")).estimate(spec, 100)
    assert [(line.quantity, line.unit_usd) for line in cost.lines] == [(100, 0.05)]
    assert any("private workers" in note for note in cost.notes)
