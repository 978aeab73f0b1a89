"""`labeljob workforce ...` against moto's Cognito and the fake Ground Truth, both on loopback."""

from __future__ import annotations

import json

import boto3
import pytest
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.iam_policy import all_actions, iam_action
from orchestrator.service_model import validate_request

# Fixtures: moto_url (session), aws (moto for every service), groundtruth (the fake), api_calls.

TEAM = "street-team"


@pytest.fixture
def cognito(groundtruth):
    """A Cognito user pool and app client, registered as the fake's private workforce."""
    idp = boto3.client("cognito-idp", region_name="us-east-1")
    pool = idp.create_user_pool(PoolName="labelers")["UserPool"]["Id"]
    app_client = idp.create_user_pool_client(UserPoolId=pool, ClientName="gt")["UserPoolClient"]["ClientId"]
    groundtruth.set_workforce(pool, app_client)
    return idp, pool, app_client


def run(*args: str):
    return CliRunner().invoke(app, ["--format", "json", "workforce", *args])


def test_create_team_sends_a_valid_request_and_makes_the_group(groundtruth, cognito):
    idp, pool, app_client = cognito
    result = run("create-team", TEAM, "--description", "Street scenes")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["created"] is True

    (request,) = groundtruth.calls("CreateWorkteam")
    assert validate_request("sagemaker", "CreateWorkteam", request) == []
    member = {"UserPool": pool, "UserGroup": TEAM, "ClientId": app_client}
    assert request["MemberDefinitions"] == [{"CognitoMemberDefinition": member}]
    assert idp.get_group(GroupName=TEAM, UserPoolId=pool)["Group"]["GroupName"] == TEAM

    again = run("create-team", TEAM)
    assert again.exit_code == 0 and json.loads(again.stdout)["created"] is False


def test_create_team_without_a_workforce_explains_what_to_do(groundtruth):
    result = run("create-team", TEAM)
    assert result.exit_code == 1
    assert "no private workforce" in result.output and "--user-pool" in result.output


def test_invite_creates_users_with_email_delivery_and_adds_them_to_the_group(groundtruth, cognito, api_calls):
    idp, pool, _ = cognito
    assert run("create-team", TEAM).exit_code == 0
    result = run("invite", "ana@example.com", "ben@example.com", "--team", TEAM)
    assert result.exit_code == 0, result.output
    assert [row["status"] for row in json.loads(result.stdout)] == ["invited", "invited"]

    created = [params for _, op, params in api_calls if op == "AdminCreateUser"]
    assert [p["Username"] for p in created] == ["ana@example.com", "ben@example.com"]
    assert all(p["DesiredDeliveryMediums"] == ["EMAIL"] for p in created)
    members = idp.list_users_in_group(UserPoolId=pool, GroupName=TEAM)["Users"]
    assert sorted(u["Username"] for u in members) == ["ana@example.com", "ben@example.com"]

    again = run("invite", "ana@example.com", "--team", TEAM)
    assert again.exit_code == 0 and json.loads(again.stdout)[0]["status"] == "already a user"


def test_invite_rejects_a_bad_address_and_an_unknown_team(groundtruth, cognito):
    assert run("invite", "not-an-address", "--team", TEAM).exit_code == 2
    result = run("invite", "ana@example.com", "--team", "nobody")
    assert result.exit_code == 1 and "no work team named 'nobody'" in result.output


def test_list_and_portal_url(groundtruth, cognito):
    assert run("create-team", TEAM).exit_code == 0
    (row,) = json.loads(run("list").stdout)
    assert row["team"] == TEAM and row["cognito_group"] == TEAM
    url = json.loads(run("portal-url").stdout)["portal_url"]
    assert url == "https://abc123def4.labeling.us-east-1.sagemaker.aws"
    assert json.loads(run("portal-url", "--team", TEAM).stdout)["portal_url"] == url


def test_every_call_of_the_workforce_commands_is_in_the_iam_policy(groundtruth, cognito, api_calls):
    api_calls.clear()
    assert run("create-team", TEAM).exit_code == 0
    assert run("invite", "ana@example.com", "--team", TEAM).exit_code == 0
    assert run("list").exit_code == 0 and run("portal-url").exit_code == 0
    needed = {iam_action(service, operation) for service, operation, _ in api_calls} - {None}
    assert needed <= all_actions(), needed - all_actions()
