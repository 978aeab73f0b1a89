"""Preflight checks before launching a job: each one a small function returning a `Check`.

`run_checks` dispatches on the spec's backend: the AWS backends through `BACKEND_CHECKS` (a
backend adds its checks by adding an entry there), the portal to `portal_checks`, which also reads
the workspace's portal database. A check never raises for what it checks: an AWS error becomes
a `fail` with a hint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

from orchestrator.aws import client, error_code, error_message
from orchestrator.backends.groundtruth.backend import (
    GroundTruthBackend,
    foreign_source_refs,
    job_buckets,
    render_template,
)
from orchestrator.errors import LabeljobError
from orchestrator.spec import marketplace_warning
from orchestrator.storage import bucket_name, is_s3_uri, open_object, split_s3_uri

if TYPE_CHECKING:
    import boto3

    from orchestrator.jobs import Backend
    from orchestrator.spec import JobSpec
    from orchestrator.storage import ObjectStore
    from orchestrator.training import TrainingPlan

Status = Literal["ok", "warn", "fail"]

# The rule Ground Truth's worker UI needs on every bucket holding images (DG sms-cors-update).
GROUNDTRUTH_CORS_RULE = {
    "AllowedHeaders": [],
    "AllowedMethods": ["GET"],
    "AllowedOrigins": ["*"],
    "ExposeHeaders": ["Access-Control-Allow-Origin"],
}
SAMPLE_OBJECTS = 3
SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
GROUNDTRUTH_MANAGED_POLICY = "AmazonSageMakerGroundTruthExecution"
# The managed policy only reaches buckets whose names contain one of these.
MANAGED_POLICY_BUCKET_WORDS = ("groundtruth", "sagemaker")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    hint: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _error(exc: Exception) -> tuple[str, str]:
    return error_code(exc, type(exc).__name__), error_message(exc)


# ------------------------------------------------------------------------------- the checks


def check_spec(spec: JobSpec, backend: Backend) -> Check:
    """The backend's rules (for Ground Truth, the service model too) accept the spec."""
    problems = backend.validate(spec)
    if problems:
        detail = "; ".join(f"{key}: {message}" for key, message in problems)
        return Check(
            "spec", "fail", f"{len(problems)} problem(s): {detail}", "fix these keys in the job spec"
        )
    return Check("spec", "ok", f"every rule of the {spec.backend} backend accepts the spec")


def check_identity(session: boto3.Session, region: str | None) -> Check:
    from botocore.exceptions import BotoCoreError, ClientError

    if not region:
        return Check(
            "credentials", "fail", "no region", "pass --region, set AWS_REGION or [groundtruth] region"
        )
    try:
        identity = client("sts", session, region_name=region).get_caller_identity()
    except (BotoCoreError, ClientError) as exc:
        return Check("credentials", "fail", str(exc), "run `aws configure`, or pass --profile")
    return Check("credentials", "ok", f"account {identity['Account']} as {identity['Arn']}, region {region}")


def check_bucket_region(s3, bucket: str, region: str, move_hint: str | None = None) -> Check:
    """The bucket exists in `region`; `move_hint` says how to match a bucket elsewhere."""
    from botocore.exceptions import ClientError

    name = f"bucket {bucket}"
    try:
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except ClientError as exc:
        code, message = _error(exc)
        hint = (
            "check the bucket name"
            if code == "NoSuchBucket"
            else "`labeljob iam-policy` lists what is needed"
        )
        return Check(name, "fail", f"{code}: {message}", hint)
    # S3 reports us-east-1 as no constraint and eu-west-1 by its legacy name.
    bucket_region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
    if bucket_region != region:
        move_hint = move_hint or "Ground Truth needs its data in the job's region: set [groundtruth] region"
        return Check(
            name, "fail", f"in {bucket_region}, the job in {region}", f"{move_hint} = '{bucket_region}'"
        )
    return Check(name, "ok", f"exists, in {region}")


def _allows_workers(rule: dict) -> bool:
    origins = rule.get("AllowedOrigins", [])
    return "GET" in rule.get("AllowedMethods", []) and any(o == "*" or "sagemaker.aws" in o for o in origins)


def check_cors(s3, bucket: str, fix: bool = False) -> Check:
    """The bucket lets the worker UI fetch images; `fix` adds Ground Truth's rule, keeping the others."""
    from botocore.exceptions import ClientError

    name = f"cors {bucket}"
    try:
        rules = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    except ClientError as exc:
        code, message = _error(exc)
        if code != "NoSuchCORSConfiguration":
            return Check(name, "fail", f"{code}: {message}", "`labeljob iam-policy` lists what is needed")
        rules = []
    if any(_allows_workers(rule) for rule in rules):
        return Check(name, "ok", "a rule lets the worker UI GET the images")
    if not fix:
        return Check(
            name,
            "fail",
            "no CORS rule lets the worker UI load the images: tasks would show no image",
            "rerun with --fix-cors to add Ground Truth's rule (existing rules are kept)",
        )
    try:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [*rules, GROUNDTRUTH_CORS_RULE]})
    except ClientError as exc:
        code, message = _error(exc)
        return Check(name, "fail", f"could not add the rule: {code}: {message}", "needs s3:PutBucketCORS")
    return Check(name, "ok", f"added Ground Truth's CORS rule ({len(rules)} existing rule(s) kept)")


def check_role(iam, role_arn: str, buckets: list[str]) -> Check:
    """The role exists and trusts SageMaker; warns when its policy cannot reach the buckets."""
    from botocore.exceptions import ClientError

    role_name = role_arn.rsplit("/", 1)[-1]
    try:
        role = iam.get_role(RoleName=role_name)["Role"]
    except ClientError as exc:
        code, message = _error(exc)
        return Check(
            "role", "fail", f"{role_name}: {code}: {message}", "`labeljob iam-policy` prints its policy"
        )
    trust = role.get("AssumeRolePolicyDocument", {})
    if isinstance(trust, str):
        trust = json.loads(unquote(trust))
    if not _trusts_sagemaker(trust):
        return Check(
            "role",
            "fail",
            f"{role_name} does not trust {SAGEMAKER_PRINCIPAL}",
            f"add {SAGEMAKER_PRINCIPAL} as a principal allowed sts:AssumeRole in its trust policy",
        )
    attached = [
        p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    ]
    inline = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    unreachable = [b for b in buckets if not any(w in b.lower() for w in MANAGED_POLICY_BUCKET_WORDS)]
    if attached == [GROUNDTRUTH_MANAGED_POLICY] and not inline and unreachable:
        return Check(
            "role",
            "warn",
            f"{role_name} has only {GROUNDTRUTH_MANAGED_POLICY}, which cannot read {', '.join(unreachable)}",
            "attach the execution-role policy of `labeljob iam-policy JOB.toml`",
        )
    return Check("role", "ok", f"{role_name} exists and trusts {SAGEMAKER_PRINCIPAL}")


def _trusts_sagemaker(document: dict) -> bool:
    statements = document.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action", [])
        services = statement.get("Principal", {}).get("Service", [])
        actions = [actions] if isinstance(actions, str) else actions
        services = [services] if isinstance(services, str) else services
        if (
            statement.get("Effect") == "Allow"
            and "sts:AssumeRole" in actions
            and SAGEMAKER_PRINCIPAL in services
        ):
            return True
    return False


def check_workteam(spec: JobSpec, sm, cognito_idp) -> Check:
    """The private team exists and has members; public and vendor teams are only described."""
    from botocore.exceptions import ClientError

    from orchestrator.backends.groundtruth.workteams import team_group

    kind, team = spec.workforce.type, spec.workforce.team or ""
    if kind == "public":
        return Check("work team", "warn", marketplace_warning(spec), "see docs/portal.md")
    if kind == "vendor":
        return Check("work team", "ok", "vendor team: its members are managed by the vendor")
    name = team.rsplit("/", 1)[-1]
    try:
        described = sm.describe_workteam(WorkteamName=name)["Workteam"]
    except ClientError as exc:
        code, message = _error(exc)
        return Check(
            "work team", "fail", f"{name}: {code}: {message}", "`labeljob workforce create-team NAME`"
        )
    group = team_group(described)
    if group is None:
        return Check("work team", "ok", f"{name} uses OIDC groups; your identity provider manages members")
    user_pool, group_name = group
    try:
        users = cognito_idp.list_users_in_group(UserPoolId=user_pool, GroupName=group_name, Limit=1)["Users"]
    except ClientError as exc:
        code, message = _error(exc)
        return Check("work team", "fail", f"{name}: Cognito group {group_name}: {code}: {message}")
    if not users:
        return Check(
            "work team",
            "fail",
            f"{name} has no members: nobody would see the tasks",
            f"`labeljob workforce invite EMAIL --team {name}`",
        )
    return Check("work team", "ok", f"{name} exists and has members")


def sample_manifest(spec: JobSpec, session: boto3.Session) -> tuple[Check, list[dict]]:
    """The manifest is readable; its first lines, for the object and template checks."""
    from orchestrator.manifest import read_manifest

    try:
        store, key = open_object(spec.input_manifest, session)
        lines = []
        for _, line in read_manifest(store, key):
            lines.append(line)
            if len(lines) == SAMPLE_OBJECTS:
                break
    except LabeljobError as exc:
        return Check("manifest", "fail", exc.message, exc.hint or "check input_manifest"), []
    if not lines:
        return Check("manifest", "fail", "the manifest has no lines", "`labeljob manifest build`"), []
    return Check("manifest", "ok", f"readable; sampled {len(lines)} line(s)"), lines


def check_objects(s3, lines: list[dict]) -> Check:
    from botocore.exceptions import ClientError

    missing = []
    for line in lines:
        ref = line["source-ref"]
        if not is_s3_uri(ref):
            missing.append(f"{ref} (not s3://)")
            continue
        try:
            bucket, key = split_s3_uri(ref)
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            missing.append(f"{ref} ({_error(exc)[0]})")
    if missing:
        return Check(
            "objects", "fail", "cannot read " + ", ".join(missing), "check the source-refs and the role"
        )
    return Check("objects", "ok", f"{len(lines)} sampled image(s) exist")


def _image_buckets(lines: list[dict]) -> list[str]:
    return sorted({bucket_name(line["source-ref"]) for line in lines if is_s3_uri(line["source-ref"])})


def check_sources(spec: JobSpec, lines: list[dict]) -> Check:
    """The sampled images lie in the job's buckets, as launch requires."""
    foreign = foreign_source_refs(spec, (line["source-ref"] for line in lines))
    buckets = ", ".join(job_buckets(spec))
    if foreign:
        return Check(
            "sources",
            "fail",
            f"outside the job's bucket(s) {buckets}: " + ", ".join(foreign),
            "copy the images into the bucket of input_manifest or output and rebuild the manifest",
        )
    return Check("sources", "ok", f"{len(lines)} sampled image(s) in {buckets}")


def check_template(spec: JobSpec, s3, line: dict) -> Check:
    """The task template renders for a sample object as Ground Truth would render it."""
    import liquid

    try:
        html = render_template(spec).decode()
        env = liquid.Environment(undefined=liquid.StrictUndefined)

        def grant_read_access(uri: str) -> str:
            bucket, key = split_s3_uri(uri)
            return s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600
            )

        env.filters["grant_read_access"] = grant_read_access
        env.filters["to_json"] = json.dumps
        page = env.from_string(html).render(
            task={"input": {"taskObject": line["source-ref"], "labels": spec.labels, "manifestLine": line}}
        )
    except LabeljobError as exc:
        return Check("template", "fail", exc.message, "check task.instructions")
    except Exception as exc:  # a Liquid error of any kind means Ground Truth would fail too
        return Check("template", "fail", f"{type(exc).__name__}: {exc}", "check task.instructions")
    if "<crowd-bounding-box" not in page:
        return Check("template", "fail", "no <crowd-bounding-box> element", "check the task template")
    return Check("template", "ok", f"renders for {line['source-ref']} ({len(page)} characters)")


def training_checks(plan: TrainingPlan, session: boto3.Session) -> list[Check]:
    """`labeljob train`'s preflight: the dataset, the request against the service model, then the
    credentials, the region of every bucket the job reads or writes, and the execution role."""
    checks = [Check(*finding) for finding in plan.data.findings()]
    problems = plan.problems()
    checks.append(
        Check("request", "fail", "; ".join(problems), "SageMaker would reject it: fix the options named")
        if problems
        else Check("request", "ok", "the service model accepts CreateTrainingJob")
    )
    checks.append(check_identity(session, plan.region))
    if checks[-1].status == "fail":
        return checks  # no bucket or role can be looked at without credentials
    refs = [plan.request["OutputDataConfig"]["S3OutputPath"]]
    refs += [str(line.get("source-ref", "")) for lines in plan.data.channels.values() for line in lines]
    buckets = sorted({bucket_name(ref) for ref in refs if is_s3_uri(ref)})
    s3 = client("s3", session, region_name=plan.region)
    move = "a training job reads and writes S3 in its own region: pass --region"
    checks += [check_bucket_region(s3, bucket, plan.region, move) for bucket in buckets]
    checks.append(check_role(client("iam", session), plan.request["RoleArn"], buckets))
    return checks


# ----------------------------------------------------------------------------- dispatching


def groundtruth_checks(spec: JobSpec, session: boto3.Session, fix_cors: bool = False) -> list[Check]:
    backend = GroundTruthBackend(session)
    region = backend.region(spec)
    checks = [check_spec(spec, backend), check_identity(session, region)]
    if checks[-1].status == "fail" or not region:
        return checks  # nothing below can work without credentials and a region
    s3 = client("s3", session, region_name=region)
    manifest, lines = sample_manifest(spec, session)
    image_buckets = _image_buckets(lines)
    buckets = sorted({*job_buckets(spec), *image_buckets})
    checks += [check_bucket_region(s3, bucket, region) for bucket in buckets]
    checks += [check_cors(s3, bucket, fix_cors) for bucket in image_buckets]
    checks.append(manifest)
    if lines:
        checks += [check_sources(spec, lines), check_objects(s3, lines)]
    if spec.groundtruth is not None:
        checks.append(check_role(client("iam", session), spec.groundtruth.role_arn, buckets))
    checks.append(
        check_workteam(spec, backend.sagemaker(spec), client("cognito-idp", session, region_name=region))
    )
    if lines:
        checks.append(check_template(spec, s3, lines[0]))
    return checks


def mturk_checks(spec: JobSpec, session: boto3.Session, fix_cors: bool = False) -> list[Check]:
    """MTurk's status, the spec, the environment, the balance, the private pool and the question."""
    from orchestrator.backends.mturk.backend import MTurkBackend
    from orchestrator.backends.mturk.client import call
    from orchestrator.backends.mturk.hits import settings
    from orchestrator.backends.mturk.pool import find_pool
    from orchestrator.backends.mturk.question import Questions

    backend = MTurkBackend(boto3_session=session)
    checks = [Check("mturk status", "warn", marketplace_warning(spec), "see docs/portal.md")]
    problems = backend.validate(spec)
    if problems:
        detail = "; ".join(f"{key}: {message}" for key, message in problems)
        return [*checks, Check("spec", "fail", f"{len(problems)} problem(s): {detail}", "fix these keys")]
    checks.append(Check("spec", "ok", "every MTurk limit accepts the job"))
    mturk = backend.client(spec)
    sandbox = settings(spec).sandbox
    where = f"{'sandbox' if sandbox else 'PRODUCTION (real money)'} at {mturk.meta.endpoint_url}"
    checks.append(Check("mturk endpoint", "ok" if sandbox else "warn", where))
    try:
        balance = call(mturk, "GetAccountBalance")["AvailableBalance"]
    except LabeljobError as exc:
        return [*checks, Check("mturk account", "fail", exc.message, exc.hint or "check the credentials")]
    except Exception as exc:  # no credentials, no network: nothing below can work
        failed = Check("mturk account", "fail", f"{type(exc).__name__}: {exc}", "check the credentials")
        return [*checks, failed]
    checks.append(Check("mturk account", "ok", f"available balance ${balance}"))
    if spec.workforce.type == "private":
        team = spec.workforce.team or ""
        pool = find_pool(mturk, team)
        hint = f"`labeljob workforce grant WORKER_ID... --team {team}`"
        checks.append(
            Check("mturk pool", "ok", f"team {team}: qualification type {pool}")
            if pool
            else Check("mturk pool", "fail", f"team {team} has no MTurk worker pool", hint)
        )
    manifest, lines = sample_manifest(spec, session)
    checks.append(manifest)
    image_buckets = _image_buckets(lines)
    s3 = client("s3", session)
    region = session.region_name or "us-east-1"
    for bucket in image_buckets:
        located = check_bucket_region(s3, bucket, region)
        if located.status == "fail" and located.detail.startswith("in "):
            hint = "image URLs are signed for the session's region: pass --region with the bucket's region"
            located = Check(located.name, "fail", located.detail, hint)
        checks += [located, check_cors(s3, bucket, fix_cors)]
    if lines:
        try:
            size = len(Questions(spec, session).question("0", lines[0]["source-ref"]).encode())
            checks.append(Check("question", "ok", f"{size:,} bytes of 65,535 for {lines[0]['source-ref']}"))
        except LabeljobError as exc:
            checks.append(Check("question", "fail", exc.message, exc.hint))
    return checks


def portal_checks(spec: JobSpec, session: boto3.Session, workspace: ObjectStore | None) -> list[Check]:
    """The spec, the manifest, its sampled images (one bucket or the image folder, a served type, read
    from their first bytes where local), the portal's public URL, and the job's marketplace entry."""
    from orchestrator.backends.portal.backend import PortalBackend

    backend = PortalBackend(workspace=workspace, boto3_session=session)
    checks = [check_spec(spec, backend)]
    manifest, lines = sample_manifest(spec, session if is_s3_uri(spec.input_manifest) else None)
    checks.append(manifest)
    if lines:
        checks.append(check_portal_images(spec, [line["source-ref"] for line in lines]))
    checks.append(check_public_url(spec.portal.public_url))
    if workspace is not None:
        checks.append(check_marketplace_entry(backend, spec.name))
    return checks


def check_portal_images(spec: JobSpec, source_refs: list[str]) -> Check:
    """The images lie where the portal serves them from and are of a type it serves."""
    from orchestrator.backends.portal.media import served_type, split_image_root

    try:
        root, keys = split_image_root(source_refs, spec.portal.image_folder)
    except LabeljobError as exc:
        return Check("images", "fail", exc.message, exc.hint or "see docs/portal.md, image_folder")
    for ref in source_refs:
        if is_s3_uri(ref):
            continue  # served by redirect: the name decided, and split_image_root checked it
        store, key = open_object(ref)
        try:
            head = store.get_range(key, 0, 32)
        except LabeljobError as exc:
            return Check("images", "fail", f"{ref}: {exc.message}", "rebuild the manifest")
        if served_type(key, head) is None:
            return Check(
                "images", "fail", f"{ref}: not a JPEG, PNG, BMP, GIF or WebP image", "rebuild the manifest"
            )
    return Check("images", "ok", f"{len(keys)} sampled image(s) served from {root}")


def check_public_url(url: str | None) -> Check:
    """The address workers reach the portal at answers its health check."""
    import httpx

    if not url:
        return Check(
            "public url",
            "warn",
            "portal.public_url is not set: links use the address `labeljob portal serve` listens on",
            "set [portal] public_url to the address workers reach",
        )
    try:
        httpx.get(url.rstrip("/") + "/healthz", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        hint = "start `labeljob portal serve` there"
        return Check("public url", "fail", f"no portal answers at {url}: {exc}", hint)
    return Check("public url", "ok", f"the portal answers at {url}")


def check_marketplace_entry(backend, job: str) -> Check:
    """Whether workers can come from a marketplace link (`labeljob portal link`)."""
    from orchestrator.backends.portal import catalog
    from orchestrator.backends.portal.db import MarketplaceLink

    with backend.database().read() as session:
        found = catalog.job_by_name(session, job)
        link = session.get(MarketplaceLink, found.id) if found is not None else None
    if found is None:
        return Check("marketplace", "ok", "the job is not launched; entry stays off until `portal link`")
    if link is None:
        detail = f"entry off: only invited workers (`labeljob portal link {job}` opens it)"
        return Check("marketplace", "ok", detail)
    return Check(
        "marketplace",
        "ok",
        f"entry on from {link.marketplace}, at most {link.new_workers_per_minute} new workers a minute",
    )


BACKEND_CHECKS: dict[str, Callable[[JobSpec, boto3.Session, bool], list[Check]]] = {
    "groundtruth": groundtruth_checks,
    "mturk": mturk_checks,
}


def run_checks(
    spec: JobSpec, boto3_session: boto3.Session, fix_cors: bool = False, workspace: ObjectStore | None = None
) -> list[Check]:
    """Every preflight check of the spec's backend, in order; the portal's read `workspace`'s database."""
    if spec.backend == "portal":
        return portal_checks(spec, boto3_session, workspace)
    checks = BACKEND_CHECKS.get(spec.backend)
    if checks is None:
        return [
            Check("backend", "warn", f"labeljob has no preflight checks for the {spec.backend} backend yet")
        ]
    return checks(spec, boto3_session, fix_cors)
