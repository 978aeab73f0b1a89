"""A SageMaker training job as a job of the workspace: planned, launched once, polled, stopped.

Its record is a `JobRecord` with backend `sagemaker-training` and the request as its spec, so
`labeljob status` and `wait` follow it like a labeling job. The channels are written under
`<output>/<training job>/input/` before the call (augmented manifests, or YOLO exports for
yolo-script): the job reads a snapshot that later edits of the source cannot change, and a local
manifest becomes readable to SageMaker.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from orchestrator.aws import client, error_code
from orchestrator.errors import InputError, SpecError, UsageError
from orchestrator.jobs import JobRecord, JobStore, utcnow
from orchestrator.manifest import write_jsonl
from orchestrator.outputs import AugmentedLine, export_lines
from orchestrator.service_model import validate_request
from orchestrator.spec import NAME_PATTERN
from orchestrator.storage import is_s3_uri, open_object, open_store
from orchestrator.training import yolo_script
from orchestrator.training.data import TrainingData, load_training_data, resolve_source
from orchestrator.training.object_detection import ALGORITHM, image_uri, training_request
from orchestrator.training.request import CHANNELS, DEFAULT_INSTANCE_TYPE, DEFAULT_MAX_RUNTIME_SECONDS

TRAINING_BACKEND = "sagemaker-training"
ALGORITHMS = (ALGORITHM, yolo_script.ALGORITHM)
SHORT_NAMES = {ALGORITHM: "od", yolo_script.ALGORITHM: "yolo"}
STATUS = {
    "InProgress": "in_progress",
    "Stopping": "in_progress",
    "Completed": "completed",
    "Failed": "failed",
    "Stopped": "stopped",
}


@dataclass
class TrainingPlan:
    """What `labeljob train` will do: the channels (and source archive) it writes, then the request."""

    data: TrainingData
    algorithm: str
    region: str
    request: dict
    channel_uris: dict[str, str]
    source_uri: str | None = None

    @property
    def name(self) -> str:
        return self.request["TrainingJobName"]

    @property
    def fingerprint(self) -> str:
        canonical = json.dumps(self.request, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def problems(self) -> list[str]:
        """Every service-model violation of the request: what SageMaker would reject."""
        return validate_request("sagemaker", "CreateTrainingJob", self.request)

    def requests(self) -> list[dict]:
        content = "augmented manifest" if self.algorithm == ALGORITHM else "YOLO export"
        puts = [
            {
                "operation": "s3:PutObject",
                "uri": uri,
                "lines": len(self.data.channels[channel]),
                "content": content,
            }
            for channel, uri in self.channel_uris.items()
        ]
        if self.source_uri:
            puts.append({"operation": "s3:PutObject", "uri": self.source_uri, "content": "sourcedir.tar.gz"})
        return [
            *puts,
            {"operation": "sagemaker:CreateTrainingJob", "region": self.region, "params": self.request},
        ]

    def _augmented(self, lines: list[dict]) -> list[AugmentedLine]:
        try:
            return [AugmentedLine.from_json(line, self.data.attribute) for line in lines]
        except ValueError as exc:  # pydantic's ValidationError is one
            raise InputError(
                f"{self.data.source.manifest}: a line the YOLO export cannot read: {exc}",
                hint="`labeljob manifest check` names the line",
            ) from None

    def write_inputs(self, boto3_session=None) -> None:
        """The channels, and the script's source archive, where the request says."""
        for channel, uri in self.channel_uris.items():
            lines = self.data.channels[channel]
            if self.algorithm == ALGORITHM:
                write_jsonl(*open_object(uri, boto3_session), lines)
            else:
                export_lines(
                    self._augmented(lines), "yolo", open_store(uri, boto3_session), labels=self.data.classes
                )
        if self.source_uri:
            store, key = open_object(self.source_uri, boto3_session)
            store.put(key, yolo_script.source_archive(), "application/gzip")


def plan_training(
    data: TrainingData,
    *,
    region: str,
    role_arn: str | None,
    output: str | None,
    algorithm: str = ALGORITHM,
    name: str | None = None,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_SECONDS,
) -> TrainingPlan:
    """The request for `data`; no remote call. Without a name, one derived from the request, so the
    same command twice names (and launches) one job."""
    if algorithm not in ALGORITHMS:
        raise UsageError(
            f"--algorithm {algorithm!r} is not supported", hint=f"use one of {', '.join(ALGORITHMS)}"
        )
    output = output or data.source.default_output
    if not output or not is_s3_uri(output):
        raise UsageError(
            f"--output {output or '(none)'}: SageMaker writes the model only to S3",
            hint="pass --output s3://BUCKET/PREFIX/",
        )
    if not role_arn:
        raise UsageError("no execution role", hint="pass --role arn:aws:iam::ACCOUNT:role/NAME")
    output = output.rstrip("/") + "/"
    common = {
        "role_arn": role_arn,
        "output": output,
        "instance_type": instance_type,
        "max_runtime_seconds": max_runtime_seconds,
    }

    def build(job_name: str) -> TrainingPlan:
        inputs = f"{output}{job_name}/input/"
        if algorithm == ALGORITHM:
            uris = {c: f"{inputs}{c}.manifest" for c in CHANNELS}
            request = training_request(
                data, name=job_name, image=image_uri(region), channel_uris=uris, **common
            )
            return TrainingPlan(data, algorithm, region, request, uris)
        uris = {c: f"{inputs}{c}/" for c in CHANNELS}
        source = f"{output}{job_name}/source/sourcedir.tar.gz"
        request = yolo_script.training_request(
            data,
            name=job_name,
            image=yolo_script.image_uri(region, instance_type),
            channel_uris=uris,
            source_uri=source,
            region=region,
            **common,
        )
        return TrainingPlan(data, algorithm, region, request, uris, source)

    if name is None:
        digest = build("x").fingerprint[:8]
        name = f"{data.source.name[:45].rstrip('-')}-{SHORT_NAMES[algorithm]}-{digest}"
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"--name {name!r}: 1-63 letters, digits and hyphens, starting with a letter or digit"
        )
    return build(name)


def prepare_training(
    source: str,
    jobs: JobStore,
    *,
    region: str | None,
    validation: str | None = None,
    label_attribute: str | None = None,
    boto3_session=None,
    **plan_options,
) -> TrainingPlan:
    """The plan for a job of the workspace or a manifest: read, split, and turned into the request."""
    if not region:
        raise UsageError("no AWS region set", hint="pass --region or set AWS_REGION")
    data = load_training_data(
        resolve_source(source, jobs),
        validation=validation,
        label_attribute=label_attribute,
        boto3_session=boto3_session,
    )
    return plan_training(data, region=region, **plan_options)


def _sagemaker(region: str, boto3_session):
    return client("sagemaker", boto3_session, region_name=region)


def launch_training(plan: TrainingPlan, jobs: JobStore, boto3_session=None) -> tuple[JobRecord, bool]:
    """Write the channels and create the job once; returns the record and whether this call created it.

    The record exists (status `launching`) before the call, so a crash half-way is resumed by the
    same command; a job SageMaker already has under this name, derived from the request, is adopted.
    """
    from botocore.exceptions import ClientError

    existing = jobs.get(plan.name)
    if existing is not None and existing.fingerprint != plan.fingerprint:
        raise SpecError(
            [("--name", f"a job named {plan.name!r} already exists with a different request")],
            source="labeljob train",
        )
    if existing is not None and existing.status != "launching":
        return existing, False
    if existing is None:
        now = utcnow()
        spec = {"algorithm": plan.algorithm, "source": plan.data.source.manifest, "region": plan.region}
        record = JobRecord(
            name=plan.name,
            backend=TRAINING_BACKEND,
            spec={**spec, "request": plan.request},
            fingerprint=plan.fingerprint,
            status="launching",
            created_at=now,
            updated_at=now,
            last_progress_at=now,
        )
        jobs.create(record)
    plan.write_inputs(boto3_session)
    sm = _sagemaker(plan.region, boto3_session)
    try:
        arn = sm.create_training_job(**plan.request)["TrainingJobArn"]
    except ClientError as exc:
        if error_code(exc) != "ResourceInUse":
            raise
        arn = sm.describe_training_job(TrainingJobName=plan.name)["TrainingJobArn"]

    def started(rec: JobRecord) -> None:
        rec.backend_state.update({"training_job_arn": arn, "region": plan.region})
        if rec.status == "launching":
            rec.status = "in_progress"

    return jobs.update(plan.name, started), existing is None


def poll_training(name: str, jobs: JobStore, boto3_session=None) -> JobRecord:
    """DescribeTrainingJob into the record; a completed job's output is its model artifact."""
    record = jobs.load(name)[0]
    if record.terminal:
        return record
    described = _sagemaker(record.spec["region"], boto3_session).describe_training_job(TrainingJobName=name)
    status = STATUS[described["TrainingJobStatus"]]
    secondary = described.get("SecondaryStatus", "")
    model = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")

    def progressed(rec: JobRecord) -> None:
        # A running training job advances on its own until MaxRuntimeInSeconds stops it, so the
        # stuck-labeling-job hints of `status` (work team, CORS, template) never apply to it.
        rec.last_progress_at = utcnow()
        rec.status = status
        rec.backend_state["secondary_status"] = secondary
        rec.failure_reason = described.get("FailureReason") or rec.failure_reason
        if status == "completed" and model:
            rec.outputs["model"] = model

    return jobs.update(name, progressed)


def stop_training(record: JobRecord, boto3_session=None) -> None:
    """StopTrainingJob; a job that has already ended is left as it is."""
    from botocore.exceptions import ClientError

    sm = _sagemaker(record.spec["region"], boto3_session)
    try:
        sm.stop_training_job(TrainingJobName=record.name)
    except ClientError:
        if sm.describe_training_job(TrainingJobName=record.name)["TrainingJobStatus"] == "InProgress":
            raise
