"""`labeljob iam-policy` against the calls labeljob really makes.

Every AWS command of a Ground Truth job is run end to end through the CLI (manifest build and
check, doctor with --fix-cors, work team and invitations, launch, status, poll, wait, stop,
consolidate and export on S3, both Lambdas), with every botocore call recorded. The operator's
calls must all be granted by the operator policy, the fake Ground Truth's own S3 calls by the
execution role's, and every granted action must be used by some call, or be on the short list of
actions no call of ours can show (named with the reason). The MTurk commands are run the same
way against the MTurk operator policy; each backend's policy holds only its own statements.
"""

from __future__ import annotations

import json

import boto3
import botocore.client
import pytest
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.iam_policy import execution_role_policy, iam_action, operator_policy
from tests.fakes.groundtruth import FakeGroundTruth
from tests.fakes.mturk import IMAGE_BUCKET, SPAMMERS, pedestrian_images

BUCKET = "iam-coverage"
ROLE = "GroundTruthExecution"
TEAM = "street-team"
# Granted, but no API call of labeljob or of the fake shows them: the reason for each.
NOT_OBSERVABLE = {
    "iam:PassRole": "authorizes CreateLabelingJob to hand the execution role to SageMaker; not a call",
    "lambda:InvokeFunction": "Ground Truth invokes the consolidation Lambda, not labeljob",
    "cloudwatch:PutMetricData": "Ground Truth's own metrics under the execution role",
    "logs:CreateLogGroup": "Ground Truth's own logs under the execution role",
    "logs:CreateLogStream": "Ground Truth's own logs under the execution role",
    "logs:PutLogEvents": "Ground Truth's own logs under the execution role",
    "logs:DescribeLogStreams": "Ground Truth's own logs under the execution role",
    "mechanicalturk:GetAssignment": "only for an assignment settled between listing and reviewing it "
    "(auto-approval, another poll, a retried call)",
    "mechanicalturk:ListHITs": "only for a launch resumed after MTurk's 24-hour idempotency-token window",
}


def policy_actions(policy: dict) -> set[str]:
    return {action for statement in policy["Statement"] for action in statement["Action"]}


def operator_actions() -> set[str]:
    return policy_actions(operator_policy(backend="groundtruth"))


def execution_actions() -> set[str]:
    return policy_actions(execution_role_policy())


@pytest.fixture
def recorded(monkeypatch, groundtruth):
    """(actor, IAM action) of every botocore call from now on; actor is "groundtruth" for the fake's
    own S3 calls (what the execution role does), else "labeljob"."""
    calls: list[tuple[str, str]] = []
    real = botocore.client.BaseClient._make_api_call

    def record(client, operation, params):
        actor = "groundtruth" if client is groundtruth._s3 else "labeljob"
        action = iam_action(client.meta.service_model.signing_name, operation)
        if action is not None:
            calls.append((actor, action))
        return real(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    return calls


@pytest.fixture
def account(groundtruth):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"images/{i}.jpg", Body=b"\xff\xd8\xff\xe0" + bytes([i]) * 32)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    boto3.client("iam", region_name="us-east-1").create_role(
        RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust)
    )
    idp = boto3.client("cognito-idp", region_name="us-east-1")
    pool = idp.create_user_pool(PoolName="labelers")["UserPool"]["Id"]
    client_id = idp.create_user_pool_client(UserPoolId=pool, ClientName="gt")["UserPoolClient"]["ClientId"]
    groundtruth.set_workforce(pool, client_id)
    return s3


def spec_file(tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nbackend = "groundtruth"\nlabels = ["pedestrian"]\n'
        f'input_manifest = "s3://{BUCKET}/manifests/input.manifest"\noutput = "s3://{BUCKET}/labeling/"\n'
        f'[workforce]\ntype = "private"\nteam = "{TEAM}"\n'
        f'[groundtruth]\nrole_arn = "arn:aws:iam::123456789012:role/{ROLE}"\n'
    )
    return str(path)


def labeljob(*args: str, exit_codes=(0,)):
    result = CliRunner().invoke(app, ["--workspace", f"s3://{BUCKET}/workspace", "--format", "json", *args])
    assert result.exit_code in exit_codes, result.output
    return result


def run_every_ground_truth_command(tmp_path, groundtruth: FakeGroundTruth, monkeypatch) -> None:
    labeljob("manifest", "build", f"s3://{BUCKET}/images", "--out", f"s3://{BUCKET}/manifests/")
    labeljob("manifest", "check", f"s3://{BUCKET}/manifests/input.manifest", "--verify-objects")
    labeljob("workforce", "create-team", TEAM, "--description", "Street scenes")
    labeljob("workforce", "invite", "ana@example.com", "--team", TEAM)
    labeljob("workforce", "list")
    labeljob("workforce", "portal-url")
    spec = spec_file(tmp_path, "iam-job")
    labeljob("doctor", spec, "--fix-cors", exit_codes=(0, 1))
    labeljob("iam-policy", spec)
    labeljob("launch", spec, "--yes")
    labeljob("status")
    labeljob("poll", "iam-job")
    groundtruth.advance(3600)
    labeljob("wait", "iam-job", "--interval", "0.01", "--timeout", "30")
    output = f"s3://{BUCKET}/labeling/iam-job/"
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["pedestrian"]))
    labeljob("consolidate", output, "--out", f"s3://{BUCKET}/again.manifest", "--labels", str(labels))
    labeljob("export", f"s3://{BUCKET}/again.manifest", "--format", "coco", "--out", f"s3://{BUCKET}/coco/")
    labeljob("launch", spec_file(tmp_path, "iam-stopped"), "--yes")
    labeljob("stop", "iam-stopped")

    from orchestrator.lambdas import consolidation_handler, poll_handler

    payload = [
        {"datasetObjectId": "0", "dataObject": {"s3Uri": f"s3://{BUCKET}/images/0.jpg"}, "annotations": []}
    ]
    boto3.client("s3", region_name="us-east-1").put_object(
        Bucket=BUCKET, Key="payload.json", Body=json.dumps(payload).encode()
    )
    event = {"labelCategories": ["pedestrian"], "labelAttributeName": "bbox"}
    consolidation_handler({**event, "payload": {"s3Uri": f"s3://{BUCKET}/payload.json"}}, None)
    monkeypatch.setenv("LABELJOB_WORKSPACE", f"s3://{BUCKET}/workspace")
    poll_handler({}, None)


def test_every_call_is_granted_and_every_grant_is_used(tmp_path, account, groundtruth, recorded, monkeypatch):
    recorded.clear()
    run_every_ground_truth_command(tmp_path, groundtruth, monkeypatch)
    ours = {action for actor, action in recorded if actor == "labeljob"}
    execution = {action for actor, action in recorded if actor == "groundtruth"}

    assert ours - operator_actions() == set(), "labeljob calls what the operator policy does not grant"
    assert execution - execution_actions() == set(), "Ground Truth needs what the execution role lacks"
    unused = (operator_actions() - ours) | (execution_actions() - execution - ours)
    assert unused <= set(NOT_OBSERVABLE), f"granted but never used: {sorted(unused - set(NOT_OBSERVABLE))}"
    assert {"sagemaker:CreateLabelingJob", "s3:PutBucketCORS", "cognito-idp:AdminCreateUser"} <= ours


def test_the_mturk_policy_grants_what_the_mturk_commands_call_and_nothing_unused(
    tmp_path, aws, fake_mturk, monkeypatch
):
    calls: set[str] = set()
    real = botocore.client.BaseClient._make_api_call

    def record(client, operation, params):
        calls.add(iam_action(client.meta.service_model.signing_name, operation) or "")
        return real(client, operation, params)

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=IMAGE_BUCKET)
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    images = [image["image"] for image in pedestrian_images(3)]
    (tmp_path / "in.manifest").write_text(
        "".join(json.dumps({"source-ref": f"s3://{IMAGE_BUCKET}/ped/{i}"}) + "\n" for i in images)
    )

    def spec(name: str) -> str:
        path = tmp_path / f"{name}.toml"
        path.write_text(
            f'name = "{name}"\nbackend = "mturk"\nlabels = ["pedestrian"]\ninput_manifest = "in.manifest"\n'
            'output = "out"\n[task]\nworkers_per_object = 3\n[workforce]\ntype = "private"\nteam = "crew"\n'
            '[mturk]\nreview_policy = "agreement"\nblock_after_rejections = 1\n'
        )
        return str(path)

    fake_mturk.spam_rate = 0.5  # rejected work: replacement assignments and a blocked worker
    options = ["--workspace", str(tmp_path / "ws"), "--format", "json"]

    def labeljob(*args: str, exit_codes=(0,)) -> None:
        result = CliRunner().invoke(app, [*options, *args])
        assert result.exit_code in exit_codes, result.output

    labeljob("workforce", "grant", *(f"AFAKEW{i:02d}" for i in range(1, 20)), *SPAMMERS, "--team", "crew")
    labeljob("workforce", "revoke", "AFAKEW19", "--team", "crew")
    # Doctor's bucket checks go to moto, whose http presigned URLs fail its question check; the
    # jobs' images are then presigned for the real S3 endpoint (https), which is never called.
    labeljob("doctor", spec("turk"), "--fix-cors", exit_codes=(1,))
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    labeljob("launch", spec("turk"), "--yes")
    for _ in range(4):
        fake_mturk.work()
        labeljob("poll", "turk")
    labeljob("cleanup", "turk")
    labeljob("launch", spec("turk-stopped"), "--yes")
    labeljob("stop", "turk-stopped")

    granted = policy_actions(operator_policy(backend="mturk"))
    used = calls - {""}
    assert used - granted == set(), "the MTurk commands call what the policy does not grant"
    # The S3 statements are shared with Ground Truth; the test above shows them used.
    unused = {action for action in granted - used if action.startswith("mechanicalturk:")}
    assert unused <= set(NOT_OBSERVABLE), f"granted but never used: {sorted(unused - set(NOT_OBSERVABLE))}"
    assert {"mechanicalturk:CreateHITWithHITType", "mechanicalturk:RejectAssignment"} <= used


def test_each_backend_gets_only_its_own_statements():
    def printed(*args: str) -> dict:
        result = CliRunner().invoke(app, ["--format", "json", "iam-policy", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    services = {
        backend: {action.split(":")[0] for action in policy_actions(document["operator"]["policy"])}
        for backend in ("groundtruth", "mturk", "portal")
        for document in [printed("--backend", backend)]
    }
    assert services == {
        "groundtruth": {"sagemaker", "cognito-idp", "iam", "s3"},
        "mturk": {"mechanicalturk", "s3"},
        "portal": {"s3"},
    }
    assert "execution_role" in printed() and "execution_role" not in printed("--backend", "mturk")


def test_a_backend_option_contradicting_the_spec_is_a_usage_error(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('name = "j"\nbackend = "portal"\nlabels = ["car"]\ninput_manifest = "in"\noutput = "o"\n')
    result = CliRunner().invoke(app, ["iam-policy", str(spec), "--backend", "mturk"])
    assert result.exit_code == 2 and "contradicts the spec's backend = 'portal'" in result.stderr
    printed = CliRunner().invoke(app, ["iam-policy", str(spec)])
    assert printed.exit_code == 0 and "if the images are in another bucket, add it" in printed.stderr
    assert CliRunner().invoke(app, ["iam-policy", str(spec), "--backend", "portal"]).exit_code == 0
