"""Least-privilege IAM policies for Ground Truth's execution role and for the operator of labeljob.

The action lists live here and nowhere else; a test compares them with the calls the tests make
(`iam_action` turns an API call into the IAM action it needs). The operator policy holds only the
statements of one backend (`BACKEND_STATEMENTS`). With a job spec, resources are narrowed to its
buckets, role, account and Lambda; without one they are `*`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from orchestrator.storage import bucket_name, is_s3_uri

if TYPE_CHECKING:
    from orchestrator.spec import JobSpec

VERSION = "2012-10-17"

# What labeljob itself calls (launch, status, poll, stop, doctor, workforce), by purpose.
OPERATOR_ACTIONS: dict[str, tuple[str, ...]] = {
    "LabelingJobs": (
        "sagemaker:CreateLabelingJob",
        "sagemaker:DescribeLabelingJob",
        "sagemaker:StopLabelingJob",
    ),
    "ListWorkteams": ("sagemaker:ListWorkteams",),
    "WorkTeams": ("sagemaker:CreateWorkteam", "sagemaker:DescribeWorkteam", "sagemaker:DescribeWorkforce"),
    "WorkforceUsers": (
        "cognito-idp:CreateGroup",
        "cognito-idp:AdminCreateUser",
        "cognito-idp:AdminAddUserToGroup",
        "cognito-idp:ListUsersInGroup",
    ),
    "PassExecutionRole": ("iam:PassRole",),
    "InspectExecutionRole": ("iam:GetRole", "iam:ListAttachedRolePolicies", "iam:ListRolePolicies"),
    "BucketObjects": ("s3:GetObject", "s3:PutObject"),
    "Buckets": ("s3:ListBucket",),
    "BucketSettings": ("s3:GetBucketLocation", "s3:GetBucketCORS", "s3:PutBucketCORS"),
    "MechanicalTurk": (
        "mechanicalturk:GetAccountBalance",
        "mechanicalturk:CreateHITType",
        "mechanicalturk:CreateHITWithHITType",
        "mechanicalturk:GetHIT",
        "mechanicalturk:ListHITs",
        "mechanicalturk:ListAssignmentsForHIT",
        "mechanicalturk:GetAssignment",
        "mechanicalturk:ApproveAssignment",
        "mechanicalturk:RejectAssignment",
        "mechanicalturk:CreateAdditionalAssignmentsForHIT",
        "mechanicalturk:CreateWorkerBlock",
        "mechanicalturk:UpdateExpirationForHIT",
        "mechanicalturk:DeleteHIT",
        "mechanicalturk:ListQualificationTypes",
        "mechanicalturk:CreateQualificationType",
        "mechanicalturk:AssociateQualificationWithWorker",
        "mechanicalturk:DisassociateQualificationFromWorker",
    ),
}

# The operator statements each backend's commands need. The portal touches AWS only for a
# workspace, outputs or images in S3, and has no doctor checks of bucket settings. MTurk and the
# portal presign images for workers with the operator's credentials, so the operator reads them.
BACKEND_STATEMENTS: dict[str, tuple[str, ...]] = {
    "groundtruth": (
        "LabelingJobs",
        "ListWorkteams",
        "WorkTeams",
        "WorkforceUsers",
        "PassExecutionRole",
        "InspectExecutionRole",
        "BucketObjects",
        "Buckets",
        "BucketSettings",
    ),
    "mturk": ("MechanicalTurk", "BucketObjects", "Buckets", "BucketSettings"),
    "portal": ("BucketObjects", "Buckets"),
}

# What Ground Truth does with the execution role while a job runs.
EXECUTION_ROLE_ACTIONS: dict[str, tuple[str, ...]] = {
    "BucketObjects": ("s3:GetObject", "s3:PutObject"),
    "Buckets": ("s3:ListBucket", "s3:GetBucketLocation"),
    "ConsolidationLambda": ("lambda:InvokeFunction",),
    "MetricsAndLogs": (
        "cloudwatch:PutMetricData",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
    ),
}

# API operations whose IAM action has another name; calls needing no permission map to None.
_ACTION_NAMES: dict[tuple[str, str], str | None] = {
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "GetBucketCors"): "s3:GetBucketCORS",
    ("s3", "PutBucketCors"): "s3:PutBucketCORS",
    ("sts", "GetCallerIdentity"): None,
}
# Services whose IAM prefix differs from their signing name.
_IAM_PREFIXES = {"mturk-requester": "mechanicalturk"}


def iam_action(service: str, operation: str) -> str | None:
    """The IAM action an API call needs, e.g. ("s3", "HeadObject") -> "s3:GetObject"."""
    return _ACTION_NAMES.get((service, operation), f"{_IAM_PREFIXES.get(service, service)}:{operation}")


def all_actions() -> set[str]:
    return {a for actions in (*OPERATOR_ACTIONS.values(), *EXECUTION_ROLE_ACTIONS.values()) for a in actions}


def _account(spec: JobSpec | None) -> str:
    match = (
        re.match(r"arn:aws[a-z\-]*:iam::(\d{12}):", spec.groundtruth.role_arn)
        if spec and spec.groundtruth
        else None
    )
    return match.group(1) if match else "*"


def _buckets(spec: JobSpec | None, workspace: str | None) -> list[str]:
    uris = [spec.input_manifest, spec.output] if spec else []
    if workspace:
        uris.append(workspace)
    return sorted({bucket_name(u) for u in uris if is_s3_uri(u)})


def _bucket_resources(buckets: list[str]) -> tuple[list[str], list[str]]:
    if not buckets:
        return ["*"], ["*"]
    return [f"arn:aws:s3:::{b}" for b in buckets], [f"arn:aws:s3:::{b}/*" for b in buckets]


def _statement(
    sid: str, actions: tuple[str, ...], resources: list[str], condition: dict | None = None
) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def operator_policy(
    spec: JobSpec | None = None, workspace: str | None = None, backend: str = "groundtruth"
) -> dict:
    """What the person or scheduler running labeljob needs for the spec's backend (else `backend`).

    Image buckets outside the spec's buckets need `s3:GetObject` and the CORS actions too
    (doctor reads and fixes them)."""
    account = _account(spec)
    buckets, objects = _bucket_resources(_buckets(spec, workspace))
    role = spec.groundtruth.role_arn if spec and spec.groundtruth else "*"
    sagemaker = f"arn:aws:sagemaker:*:{account}"
    wanted = BACKEND_STATEMENTS[spec.backend if spec else backend]
    statements = [
        _statement("LabelingJobs", OPERATOR_ACTIONS["LabelingJobs"], [f"{sagemaker}:labeling-job/*"]),
        _statement("ListWorkteams", OPERATOR_ACTIONS["ListWorkteams"], ["*"]),
        _statement(
            "WorkTeams",
            OPERATOR_ACTIONS["WorkTeams"],
            [f"{sagemaker}:workteam/*", f"{sagemaker}:workforce/*"],
        ),
        _statement(
            "WorkforceUsers",
            OPERATOR_ACTIONS["WorkforceUsers"],
            [f"arn:aws:cognito-idp:*:{account}:userpool/*"],
        ),
        _statement(
            "PassExecutionRole",
            OPERATOR_ACTIONS["PassExecutionRole"],
            [role],
            {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        ),
        _statement("InspectExecutionRole", OPERATOR_ACTIONS["InspectExecutionRole"], [role]),
        _statement("BucketObjects", OPERATOR_ACTIONS["BucketObjects"], objects),
        _statement("Buckets", OPERATOR_ACTIONS["Buckets"], buckets),
        _statement("BucketSettings", OPERATOR_ACTIONS["BucketSettings"], buckets),
        # MTurk has no resource-level permissions.
        _statement("MechanicalTurk", OPERATOR_ACTIONS["MechanicalTurk"], ["*"]),
    ]
    return {"Version": VERSION, "Statement": [x for x in statements if x["Sid"] in wanted]}


def execution_role_policy(spec: JobSpec | None = None, workspace: str | None = None) -> dict:
    """What Ground Truth needs while running a job: the data, our Lambda, metrics and logs."""
    buckets, objects = _bucket_resources(_buckets(spec, workspace))
    statements = [
        _statement("BucketObjects", EXECUTION_ROLE_ACTIONS["BucketObjects"], objects),
        _statement("Buckets", EXECUTION_ROLE_ACTIONS["Buckets"], buckets),
        _statement("MetricsAndLogs", EXECUTION_ROLE_ACTIONS["MetricsAndLogs"], ["*"]),
    ]
    gt = spec.groundtruth if spec else None
    if gt is None or gt.consolidation == "labeljob":
        function = gt.consolidation_lambda_arn if gt and gt.consolidation_lambda_arn else "*"
        statements.insert(
            2, _statement("ConsolidationLambda", EXECUTION_ROLE_ACTIONS["ConsolidationLambda"], [function])
        )
    return {"Version": VERSION, "Statement": statements}


def execution_role_trust_policy() -> dict:
    """Lets SageMaker assume the execution role."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
