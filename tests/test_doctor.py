"""`labeljob doctor` against moto (S3, IAM, STS, Cognito) and the fake Ground Truth, on loopback."""

from __future__ import annotations

import json

import boto3
import pytest
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.doctor import GROUNDTRUTH_CORS_RULE
from orchestrator.iam_policy import all_actions, iam_action

# Fixtures: moto_url (session), aws (moto for every service), groundtruth (the fake), api_calls.

BUCKET = "sagemaker-doctor"
ROLE = "GroundTruthExecution"
TEAM = "street-team"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
OTHER_RULE = {"AllowedMethods": ["PUT"], "AllowedOrigins": ["https://uploads.example.com"]}


@pytest.fixture
def account(groundtruth):
    """Everything a Ground Truth job needs, healthy except for the bucket's CORS rule."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    lines = []
    for i in range(4):
        s3.put_object(Bucket=BUCKET, Key=f"images/{i}.jpg", Body=b"\xff\xd8" + bytes([i]))
        lines.append(json.dumps({"source-ref": f"s3://{BUCKET}/images/{i}.jpg"}))
    s3.put_object(Bucket=BUCKET, Key="manifests/input.manifest", Body="\n".join(lines).encode())
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": [OTHER_RULE]})

    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(TRUST))

    idp = boto3.client("cognito-idp", region_name="us-east-1")
    pool = idp.create_user_pool(PoolName="labelers")["UserPool"]["Id"]
    app_client = idp.create_user_pool_client(UserPoolId=pool, ClientName="gt")["UserPoolClient"]["ClientId"]
    idp.create_group(GroupName=TEAM, UserPoolId=pool)
    idp.admin_create_user(UserPoolId=pool, Username="ana@example.com")
    idp.admin_add_user_to_group(UserPoolId=pool, Username="ana@example.com", GroupName=TEAM)
    member = {"CognitoMemberDefinition": {"UserPool": pool, "UserGroup": TEAM, "ClientId": app_client}}
    sm = boto3.client("sagemaker", region_name="us-east-1")
    sm.create_workteam(WorkteamName=TEAM, Description="street", MemberDefinitions=[member])
    return {"s3": s3, "iam": iam, "idp": idp, "pool": pool}


def write_spec(tmp_path, manifest: str = f"s3://{BUCKET}/manifests/input.manifest", team: str = TEAM) -> str:
    path = tmp_path / "job.toml"
    path.write_text(
        f"""
name = "street-objects-001"
backend = "groundtruth"
labels = ["pedestrian"]
input_manifest = "{manifest}"
output = "s3://{BUCKET}/labeling/"

[workforce]
type = "private"
team = "{team}"

[groundtruth]
role_arn = "arn:aws:iam::123456789012:role/{ROLE}"
"""
    )
    return str(path)


def doctor(*args: str) -> tuple[int, dict[str, dict]]:
    result = CliRunner().invoke(app, ["--format", "json", "doctor", *args])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, {check["name"]: check for check in json.loads(result.stdout)}


def statuses(checks: dict[str, dict]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}


def test_a_bucket_without_the_cors_rule_fails_and_fix_cors_adds_it(tmp_path, account):
    spec = write_spec(tmp_path)
    code, checks = doctor(spec)
    assert code == 1
    assert checks[f"cors {BUCKET}"]["status"] == "fail" and "--fix-cors" in checks[f"cors {BUCKET}"]["hint"]
    # The role has no policy but the managed one's bucket words match: only CORS fails.
    assert [name for name, status in statuses(checks).items() if status != "ok"] == [f"cors {BUCKET}"]

    code, checks = doctor(spec, "--fix-cors")
    assert code == 0, checks
    assert "added" in checks[f"cors {BUCKET}"]["detail"]
    rules = account["s3"].get_bucket_cors(Bucket=BUCKET)["CORSRules"]
    assert any(rule["AllowedOrigins"] == OTHER_RULE["AllowedOrigins"] for rule in rules)
    assert any(rule["AllowedOrigins"] == GROUNDTRUTH_CORS_RULE["AllowedOrigins"] for rule in rules)

    code, checks = doctor(spec)
    assert code == 0 and set(statuses(checks).values()) == {"ok"}
    assert set(checks) >= {
        "spec",
        "credentials",
        f"bucket {BUCKET}",
        "manifest",
        "objects",
        "role",
        "work team",
        "template",
    }


def test_a_missing_role_fails(tmp_path, account):
    account["iam"].delete_role(RoleName=ROLE)
    code, checks = doctor(write_spec(tmp_path), "--fix-cors")
    assert code == 1 and checks["role"]["status"] == "fail" and "NoSuchEntity" in checks["role"]["detail"]


def test_a_role_that_does_not_trust_sagemaker_fails(tmp_path, account):
    lambda_trust = json.loads(json.dumps(TRUST).replace("sagemaker", "lambda"))
    account["iam"].update_assume_role_policy(RoleName=ROLE, PolicyDocument=json.dumps(lambda_trust))
    code, checks = doctor(write_spec(tmp_path), "--fix-cors")
    assert code == 1 and checks["role"]["status"] == "fail"
    assert "sagemaker.amazonaws.com" in checks["role"]["hint"]


def test_an_unreadable_manifest_fails(tmp_path, account):
    code, checks = doctor(write_spec(tmp_path, manifest=f"s3://{BUCKET}/manifests/missing.manifest"))
    assert code == 1 and checks["manifest"]["status"] == "fail"
    assert "no such object" in checks["manifest"]["detail"]


def test_a_team_without_members_or_a_missing_team_fails(tmp_path, account):
    account["idp"].admin_remove_user_from_group(
        UserPoolId=account["pool"], Username="ana@example.com", GroupName=TEAM
    )
    code, checks = doctor(write_spec(tmp_path), "--fix-cors")
    assert code == 1 and "no members" in checks["work team"]["detail"]
    code, checks = doctor(write_spec(tmp_path, team="nobody"), "--fix-cors")
    assert code == 1 and checks["work team"]["status"] == "fail"


def test_a_bucket_in_another_region_fails(tmp_path, account):
    other = "sagemaker-doctor-eu"
    s3 = account["s3"]
    s3.create_bucket(Bucket=other, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(
        Bucket=other, Key="in.manifest", Body=json.dumps({"source-ref": f"s3://{BUCKET}/images/0.jpg"})
    )
    code, checks = doctor(write_spec(tmp_path, manifest=f"s3://{other}/in.manifest"), "--fix-cors")
    assert code == 1
    assert (
        checks[f"bucket {other}"]["status"] == "fail" and "eu-west-1" in checks[f"bucket {other}"]["detail"]
    )


def test_table_output_is_one_line_per_check(tmp_path, account):
    result = CliRunner().invoke(app, ["doctor", write_spec(tmp_path)])
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("ok    spec:")
    assert any(
        line.startswith(f"fail  cors {BUCKET}:") and "(hint: rerun with --fix-cors" in line for line in lines
    )


def test_every_call_of_doctor_is_in_the_iam_policy(tmp_path, account, api_calls):
    api_calls.clear()
    assert doctor(write_spec(tmp_path), "--fix-cors")[0] == 0
    needed = {iam_action(service, operation) for service, operation, _ in api_calls} - {None}
    assert needed <= all_actions(), needed - all_actions()
    assert {"s3:PutBucketCORS", "iam:GetRole", "sagemaker:DescribeWorkteam"} <= needed
