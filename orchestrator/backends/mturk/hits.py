"""The MTurk requests of one job, built from its spec without any call.

One HIT type per job (reward, durations, title and qualifications), then one HIT per manifest
line with `MaxAssignments = workers_per_object`. Every HIT carries a `UniqueRequestToken` and a
`RequesterAnnotation` derived from the job and the object, so a repeated launch finds the HITs it
created before instead of creating them again.
"""

from __future__ import annotations

import re
import uuid

from orchestrator.backends.mturk.fees import LARGE_HIT_ASSIGNMENTS
from orchestrator.spec import JobSpec, MTurkSpec

MIN_SECONDS = 30
MAX_SECONDS = 31_536_000
MAX_AUTO_APPROVAL_SECONDS = 2_592_000
MAX_DESCRIPTION = 2_000
MAX_KEYWORDS = 1_000
MAX_LOCALES = 30
# MTurk's system qualification types (API reference, QualificationRequirement).
PERCENT_APPROVED = "000000000000000000L0"
NUMBER_APPROVED = "00000000000000000040"
LOCALE = "00000000000000000071"
MASTERS = {True: "2ARFPLSP75KLA8M8DH1HTEQVJT3SY6", False: "2F1QJWKUDD8XADTFD2Q0G6UTO95ALH"}
# Worker_PercentAssignmentsApproved is 100 until a worker has this many approved assignments.
APPROVAL_RATE_MEANINGFUL_AFTER = 100
_LOCALE = re.compile(r"^([A-Z]{2})(?:-([A-Z0-9]{1,3}))?$")


def settings(spec: JobSpec) -> MTurkSpec:
    """The job's [mturk] table; its defaults when the spec has none."""
    return spec.mturk or MTurkSpec()


def request_token(spec: JobSpec, object_id: str, round_: str = "1") -> str:
    """The UniqueRequestToken of one request about one object (a uuid5: 36 characters).

    The spec's fingerprint is part of it, so a new job reusing an old name never collides.
    """
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"labeljob/{spec.name}/{spec.fingerprint()[:16]}/{object_id}/{round_}")
    )


def annotation(spec: JobSpec, object_id: str) -> str:
    """The RequesterAnnotation naming job and object, to find a HIT again after the token expired."""
    return f"labeljob;job={spec.name};spec={spec.fingerprint()[:16]};object={object_id}"


def locale_values(locales: list[str]) -> list[dict]:
    values = []
    for locale in locales:
        match = _LOCALE.fullmatch(locale)
        if match is None:
            raise ValueError(f"{locale!r} is not a country code like 'US' or 'US-PA'")
        country, subdivision = match.groups()
        values.append({"Country": country, **({"Subdivision": subdivision} if subdivision else {})})
    return values


def qualification_requirements(spec: JobSpec, pool_qualification_id: str | None = None) -> list[dict]:
    """The presets of the [mturk] table, plus the private pool's requirement when there is one."""
    m = settings(spec)
    requirements = []
    if m.min_approval_rate is not None:
        requirements.append(
            {
                "QualificationTypeId": PERCENT_APPROVED,
                "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [m.min_approval_rate],
            }
        )
    if m.min_approved_hits is not None:
        requirements.append(
            {
                "QualificationTypeId": NUMBER_APPROVED,
                "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [m.min_approved_hits],
            }
        )
    if m.locales:
        requirements.append(
            {"QualificationTypeId": LOCALE, "Comparator": "In", "LocaleValues": locale_values(m.locales)}
        )
    if m.masters:
        requirements.append({"QualificationTypeId": MASTERS[m.sandbox], "Comparator": "Exists"})
    if pool_qualification_id is not None:
        from orchestrator.backends.mturk.pool import pool_requirement

        requirements.append(pool_requirement(pool_qualification_id))
    return requirements


def hit_type_request(spec: JobSpec, requirements: list[dict]) -> dict:
    m = settings(spec)
    return {
        "AutoApprovalDelayInSeconds": m.auto_approve_after,
        "AssignmentDurationInSeconds": spec.task.time_limit,
        "Reward": m.reward_usd,
        "Title": spec.task.title,
        "Keywords": ", ".join(spec.task.keywords),
        "Description": spec.task.description,
        "QualificationRequirements": requirements,
    }


def first_assignments(spec: JobSpec) -> int:
    """Assignments a HIT starts with: `workers_per_object`, or `min_workers` in an adaptive job."""
    adaptive = spec.task.adaptive
    return adaptive.min_workers if adaptive else spec.task.workers_per_object


def most_assignments(spec: JobSpec) -> int:
    """Answers an object may get: `workers_per_object`, or `max_workers` in an adaptive job."""
    adaptive = spec.task.adaptive
    return adaptive.max_workers if adaptive else spec.task.workers_per_object


def hit_request(
    spec: JobSpec, hit_type_id: str, object_id: str, question: str, assignments: int | None = None
) -> dict:
    return {
        "HITTypeId": hit_type_id,
        "MaxAssignments": assignments or first_assignments(spec),
        "LifetimeInSeconds": spec.task.lifetime,
        "Question": question,
        "RequesterAnnotation": annotation(spec, object_id),
        "UniqueRequestToken": request_token(spec, object_id),
    }


def assignment_cap(workers_per_object: int) -> int:
    """The most assignments a HIT may grow to by replacing rejected work.

    Up to twice the workers asked for, and never from below 10 to 10 or more: MTurk refuses that
    (InvalidMaximumAssignmentsIncrease), and it would raise the fee on every assignment.
    """
    cap = 2 * workers_per_object
    if workers_per_object < LARGE_HIT_ASSIGNMENTS:
        cap = min(cap, LARGE_HIT_ASSIGNMENTS - 1)
    return cap


def spec_problems(spec: JobSpec) -> list[tuple[str, str]]:
    """What MTurk would refuse in the spec, as (key, message)."""
    m = settings(spec)
    task = spec.task
    problems: list[tuple[str, str]] = []
    if (
        task.adaptive is not None
        and task.adaptive.min_workers < LARGE_HIT_ASSIGNMENTS <= task.adaptive.max_workers
    ):
        problems.append(
            (
                "task.adaptive.max_workers",
                f"{task.adaptive.max_workers}: a HIT created with fewer than 10 assignments cannot be "
                f"extended past {LARGE_HIT_ASSIGNMENTS - 1}",
            )
        )
    quality = spec.quality
    if quality is not None and quality.gold_min_f1 is not None and spec.workforce.type != "private":
        problems.append(
            (
                "quality.gold_min_f1",
                "on MTurk a worker below it loses the private pool's qualification: "
                "needs workforce.type private",
            )
        )
    if float(m.reward_usd) <= 0:
        problems.append(("mturk.reward_usd", "must be at least 0.01"))
    for key, value in (("task.time_limit", task.time_limit), ("task.lifetime", task.lifetime)):
        if not MIN_SECONDS <= value <= MAX_SECONDS:
            problems.append((key, f"{value} s is outside MTurk's 30 s to 365 days"))
    if m.auto_approve_after > MAX_AUTO_APPROVAL_SECONDS:
        problems.append(("mturk.auto_approve_after", f"{m.auto_approve_after} s is over MTurk's 30 days"))
    if len(task.description) > MAX_DESCRIPTION:
        problems.append(("task.description", f"{len(task.description)} characters; MTurk allows 2,000"))
    keywords = ", ".join(task.keywords)
    if len(keywords) > MAX_KEYWORDS:
        problems.append(("task.keywords", f"{len(keywords)} characters in all; MTurk allows 1,000"))
    if len(m.locales) > MAX_LOCALES:
        problems.append(("mturk.locales", f"{len(m.locales)} locales; MTurk allows 30"))
    try:
        locale_values(m.locales)
    except ValueError as exc:
        problems.append(("mturk.locales", str(exc)))
    if spec.workforce.type == "vendor":
        problems.append(
            ("workforce.type", 'MTurk has "public" and "private" workforces; "vendor" is Ground Truth only')
        )
    if spec.workforce.type == "private" and not spec.workforce.team:
        problems.append(
            (
                "workforce.team",
                "a private MTurk workforce needs the team whose pool `labeljob workforce grant` fills",
            )
        )
    if spec.workforce.price_usd is not None:
        problems.append(("workforce.price_usd", "not used by MTurk; set mturk.reward_usd"))
    if m.question == "external":
        if not m.external_url:
            problems.append(
                ("mturk.external_url", 'required with question = "external": the portal\'s marketplace URL')
            )
        elif not m.external_url.startswith("https://"):
            problems.append(("mturk.external_url", "must be an https:// URL (MTurk only frames https pages)"))
    elif m.external_url:
        problems.append(("mturk.external_url", 'only used with question = "external"'))
    if m.review_policy == "agreement" and task.workers_per_object < 3:
        problems.append(
            (
                "mturk.review_policy",
                "agreement needs task.workers_per_object >= 3 to tell spam from disagreement",
            )
        )
    if m.block_after_rejections is not None and m.review_policy != "agreement":
        problems.append(("mturk.block_after_rejections", 'only applies with review_policy = "agreement"'))
    return problems


def spec_warnings(spec: JobSpec) -> list[str]:
    """Legal but probably unwanted settings."""
    m = settings(spec)
    warnings = []
    workers = spec.task.workers_per_object
    if workers >= LARGE_HIT_ASSIGNMENTS:
        warnings.append(
            f"task.workers_per_object = {workers}: MTurk charges another 20 % on HITs with 10 or more "
            "assignments; 9 or fewer keeps the fee at 20 %"
        )
    elif assignment_cap(workers) == workers:
        warnings.append(
            f"task.workers_per_object = {workers}: rejected work cannot be replaced, because a HIT "
            "created with fewer than 10 assignments cannot be extended past 9"
        )
    if m.min_approval_rate is not None and (m.min_approved_hits or 0) < APPROVAL_RATE_MEANINGFUL_AFTER:
        warnings.append(
            "mturk.min_approval_rate: every worker has 100 % until 100 approved assignments; set "
            "mturk.min_approved_hits = 100 or more for it to mean something"
        )
    return warnings
