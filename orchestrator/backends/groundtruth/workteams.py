"""Ground Truth's private workforce: work teams backed by Cognito groups, invitations, the portal.

One Cognito user pool is the workforce of an account and region; each work team is one group in
it. Every function takes the SageMaker and Cognito clients from its caller.
"""

from __future__ import annotations

from orchestrator.aws import error_code
from orchestrator.errors import BackendError, NotFound, UsageError
from orchestrator.service_model import validate_request

DEFAULT_WORKFORCE = "default"


def cognito_workforce(sm, workforce: str = DEFAULT_WORKFORCE) -> tuple[str, str]:
    """The user pool and app client id of the account's Cognito workforce."""
    from botocore.exceptions import ClientError

    try:
        described = sm.describe_workforce(WorkforceName=workforce)["Workforce"]
    except ClientError as exc:
        if error_code(exc) in {"ResourceNotFound", "ValidationException"}:
            raise NotFound(
                f"no private workforce named {workforce!r} in this region",
                hint="create one in the SageMaker console (Ground Truth > Labeling workforces), "
                "or pass --user-pool and --client-id",
            ) from None
        raise
    cognito = described.get("CognitoConfig")
    if not cognito:
        raise BackendError(
            f"workforce {workforce!r} signs workers in through OIDC, not Cognito",
            hint="create the team with your identity provider's groups in the SageMaker console",
        )
    return cognito["UserPool"], cognito["ClientId"]


def create_team(
    sm,
    cognito_idp,
    name: str,
    *,
    description: str | None = None,
    user_pool: str | None = None,
    client_id: str | None = None,
    workforce: str = DEFAULT_WORKFORCE,
) -> dict:
    """A Cognito group and a work team of the same name; an existing team of that group is reused."""
    from botocore.exceptions import ClientError

    if not (user_pool and client_id):
        found_pool, found_client = cognito_workforce(sm, workforce)
        user_pool, client_id = user_pool or found_pool, client_id or found_client
    request = {
        "WorkteamName": name,
        "WorkforceName": workforce,
        "Description": description or f"labeljob work team {name}",
        "MemberDefinitions": [
            {"CognitoMemberDefinition": {"UserPool": user_pool, "UserGroup": name, "ClientId": client_id}}
        ],
    }
    problems = validate_request("sagemaker", "CreateWorkteam", request)
    if problems:
        raise UsageError("the work team request is invalid: " + "; ".join(problems))
    try:
        cognito_idp.create_group(GroupName=name, UserPoolId=user_pool, Description=request["Description"])
    except ClientError as exc:
        if error_code(exc) != "GroupExistsException":
            raise
    try:
        arn = sm.create_workteam(**request)["WorkteamArn"]
    except ClientError as exc:
        if error_code(exc) != "ResourceInUse":
            raise
        existing = sm.describe_workteam(WorkteamName=name)["Workteam"]
        if team_group(existing) != (user_pool, name):
            raise BackendError(
                f"a work team named {name!r} already exists with other members",
                hint="choose another name, or invite people to the existing team",
            ) from None
        return {"team": name, "arn": existing["WorkteamArn"], "user_pool": user_pool, "created": False}
    return {"team": name, "arn": arn, "user_pool": user_pool, "created": True}


def team_group(team: dict) -> tuple[str, str] | None:
    """The (user pool, group) of a described work team, or None when it uses OIDC groups."""
    for member in team.get("MemberDefinitions", ()):
        definition = member.get("CognitoMemberDefinition")
        if definition:
            return definition["UserPool"], definition["UserGroup"]
    return None


def describe_team(sm, name: str) -> dict:
    """The described work team; NotFound when there is none of that name."""
    from botocore.exceptions import ClientError

    try:
        return sm.describe_workteam(WorkteamName=name)["Workteam"]
    except ClientError as exc:
        if error_code(exc) in {"ResourceNotFound", "ValidationException"}:
            raise NotFound(
                f"no work team named {name!r} in this region",
                hint="`labeljob workforce list` shows the teams; `labeljob workforce create-team` makes one",
            ) from None
        raise


def invite(sm, cognito_idp, team: str, emails: list[str]) -> list[dict]:
    """Create a Cognito user per address (the invitation goes by e-mail) and add it to the team."""
    from botocore.exceptions import ClientError

    bad = [e for e in emails if "@" not in e.strip("@")]
    if bad:
        raise UsageError(f"not an e-mail address: {', '.join(bad)}")
    group = team_group(describe_team(sm, team))
    if group is None:
        raise BackendError(
            f"work team {team!r} uses OIDC groups",
            hint="add the people to the group in your identity provider",
        )
    user_pool, group_name = group
    results = []
    for email in emails:
        status = "invited"
        try:
            cognito_idp.admin_create_user(
                UserPoolId=user_pool,
                Username=email,
                UserAttributes=[
                    {"Name": "email", "Value": email},
                    {"Name": "email_verified", "Value": "True"},
                ],
                # Cognito's default is SMS; workers sign in with the e-mailed temporary password.
                DesiredDeliveryMediums=["EMAIL"],
            )
        except ClientError as exc:
            if error_code(exc) != "UsernameExistsException":
                raise
            status = "already a user"
        cognito_idp.admin_add_user_to_group(UserPoolId=user_pool, Username=email, GroupName=group_name)
        results.append({"email": email, "team": team, "status": status})
    return results


def list_teams(sm) -> list[dict]:
    """Every work team of the region: name, kind, members, portal host."""
    rows = []
    for page in sm.get_paginator("list_workteams").paginate():
        for team in page.get("Workteams", ()):
            group = team_group(team)
            rows.append(
                {
                    "team": team["WorkteamName"],
                    "arn": team["WorkteamArn"],
                    "cognito_group": group[1] if group else None,
                    "portal": f"https://{team['SubDomain']}" if team.get("SubDomain") else None,
                }
            )
    return rows


def portal_url(sm, team: str | None = None) -> str:
    """The worker portal's https:// address, of the named team or of the first private team."""
    if team:
        subdomain = describe_team(sm, team).get("SubDomain")
    else:
        subdomain = next((row["portal"][8:] for row in list_teams(sm) if row["portal"]), None)
    if not subdomain:
        raise NotFound(
            "no private work team with a worker portal in this region",
            hint="create one with `labeljob workforce create-team NAME`",
        )
    return f"https://{subdomain}"
