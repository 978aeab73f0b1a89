"""Ground Truth's per-region ARNs: built-in bounding-box Lambdas and work teams.

Source: the API model's `PreHumanTaskLambdaArn` / `AnnotationConsolidationLambdaArn` docs
(botocore sagemaker 2017-07-24); the table is in docs/groundtruth.md, "Limits".
"""

from __future__ import annotations

import re
from typing import Literal

# The AWS account that owns the built-in PRE-/ACS- Lambdas in each region that has them.
LAMBDA_ACCOUNTS: dict[str, str] = {
    "us-east-1": "432418664414",
    "us-east-2": "266458841044",
    "us-west-2": "081040173940",
    "ca-central-1": "918755190332",
    "eu-west-1": "568282634449",
    "eu-west-2": "487402164563",
    "eu-central-1": "203001061592",
    "ap-northeast-1": "477331159723",
    "ap-northeast-2": "845288260483",
    "ap-south-1": "565803892007",
    "ap-southeast-1": "377565633583",
    "ap-southeast-2": "454466003867",
}
PUBLIC_WORKTEAM_ACCOUNT = "394669845002"

# The built-in bounding-box task of a plain job, an adjustment job and a verification job.
Task = Literal["BoundingBox", "AdjustmentBoundingBox", "VerificationBoundingBox"]
TASK_FOR_CHAIN: dict[str | None, Task] = {
    None: "BoundingBox",
    "adjust": "AdjustmentBoundingBox",
    "verify": "VerificationBoundingBox",
}

WORKTEAM_ARN = re.compile(r"^arn:aws[a-z\-]*:sagemaker:([a-z0-9\-]*):([0-9]{12}):workteam/(.+)$")


def lambda_arn(region: str, step: Literal["PRE", "ACS"], task: Task = "BoundingBox") -> str:
    """The built-in pre-annotation (PRE) or consolidation (ACS) Lambda of `task` in `region`."""
    return f"arn:aws:lambda:{region}:{LAMBDA_ACCOUNTS[region]}:function:{step}-{task}"


def public_workteam_arn(region: str) -> str:
    return f"arn:aws:sagemaker:{region}:{PUBLIC_WORKTEAM_ACCOUNT}:workteam/public-crowd/default"


def private_workteam_arn(region: str, account: str, team: str) -> str:
    return f"arn:aws:sagemaker:{region}:{account}:workteam/private-crowd/{team}"
