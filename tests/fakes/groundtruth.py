"""A fake SageMaker Ground Truth under a real boto3 client, plus the loopback AWS the tests use.

`FakeGroundTruth` is a threading HTTP server on 127.0.0.1 speaking SageMaker's JSON protocol
(`X-Amz-Target: SageMaker.<Operation>`); product code reaches it through
`AWS_ENDPOINT_URL_SAGEMAKER` and never knows it is a fake. It checks every request against
botocore's service model (`ValidationException` with every problem otherwise), and serves
labeling jobs, work teams and the workforce.

Jobs follow the fake's own clock (`advance(seconds)`, or `advance_per_describe`):
Initializing for `init_seconds`, then InProgress, where it reads the input manifest, label
categories and UI template from S3 and one object gets its answers every `seconds_per_object`.
Answers are real crowd answers: object i gets record i (modulo) of pedestrians-dev.jsonl (images
1280x720), a worker slot sometimes taken by a spammer drawing random boxes (`spam_rate`). For each
answered object it writes Ground Truth's layout under `<S3OutputPath>/<job>/`:
`annotations/worker-response/iteration-1/<id>/<YYYY-MM-DD_HH:MM:SS>.json`,
`annotations/consolidated-annotation/consolidation-response/iteration-1/<ts>.json`, and at the
end `manifests/output/output.manifest` (its own consolidation: matched boxes averaged), setting
`LabelingJobOutput.OutputDatasetS3Uri`. Lines of objects that got no answer are copied unchanged.
`fail_job` / StopLabelingJob end a job Failed (with a reason) or Stopped.

Faults: `fail_next(operation, times, code)` answers the next calls with an error (throttling by
default); `fail_rate(operation, rate, code, status)` fails a seeded share of calls ("*" = any).

The fake reaches S3 through `s3_endpoint` (a moto server, the same one the product uses). Every
request it receives is recorded in `requests`, including ones for other services, so a test can
point all of AWS at it and assert that nothing was called.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.service_model import validate_request

PEDESTRIANS = Path(__file__).resolve().parents[1] / "data" / "pedestrians-dev.jsonl"
IMAGE_WIDTH, IMAGE_HEIGHT = 1280, 720
DEFAULT_ACCOUNT = "123456789012"
TERMINAL = {"Completed", "Failed", "Stopped"}
_ELEMENT_NAME = re.compile(r"<crowd-bounding-box\b[^>]*?\sname=\"([^\"]+)\"", re.S)
_PRIOR_ATTRIBUTE = re.compile(r"task\.input\.manifestLine\.([A-Za-z0-9-]+)\.annotations")


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class Fault:
    operation: str
    code: str
    status: int
    remaining: int | None = None
    rate: float = 1.0


@dataclass
class FakeJob:
    request: dict
    arn: str
    created: float
    status: str = "Initializing"
    modified: float = 0.0
    started: float | None = None
    failure_reason: str | None = None
    lines: list[dict] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    element_name: str = "boundingBox"
    prior_attribute: str | None = None
    results: dict[int, dict] = field(default_factory=dict)
    output_uri: str | None = None

    @property
    def name(self) -> str:
        return self.request["LabelingJobName"]

    @property
    def prefix(self) -> str:
        return self.request["OutputConfig"]["S3OutputPath"].rstrip("/") + "/" + self.name + "/"


@dataclass
class FakeTrainingJob:
    request: dict
    arn: str
    created: float
    modified: float
    status: str = "InProgress"
    secondary: str = "Starting"
    failure_reason: str | None = None
    model_uri: str | None = None

    @property
    def name(self) -> str:
        return self.request["TrainingJobName"]


@lru_cache(maxsize=1)
def pedestrian_records() -> list[dict]:
    return [json.loads(line) for line in PEDESTRIANS.read_text().splitlines() if line.strip()]


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _iou(a: dict, b: dict) -> float:
    x1, y1 = max(a["left"], b["left"]), max(a["top"], b["top"])
    x2 = min(a["left"] + a["width"], b["left"] + b["width"])
    y2 = min(a["top"] + a["height"], b["top"] + b["height"])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a["width"] * a["height"] + b["width"] * b["height"] - inter
    return inter / union if union > 0 else 0.0


def _mean_box(members: list[dict]) -> dict:
    return {k: sum(m[k] for m in members) / len(members) for k in ("left", "top", "width", "height")}


def consolidate(answers: list[list[dict]]) -> list[tuple[dict, str, float]]:
    """Ground Truth-like consolidation: match boxes across workers by IoU >= 0.5, average them.

    A cluster needs at least half the workers; confidence is the members' mean IoU with the
    average (0.0 with one worker, as Ground Truth reports).
    """
    clusters: list[list[tuple[int, dict]]] = []
    for worker, boxes in enumerate(answers):
        for box in boxes:
            best, best_iou = None, 0.5
            for i, cluster in enumerate(clusters):
                if any(w == worker for w, _ in cluster):
                    continue
                overlap = _iou(box, _mean_box([b for _, b in cluster]))
                if overlap >= best_iou:
                    best, best_iou = i, overlap
            if best is None:
                clusters.append([(worker, box)])
            else:
                clusters[best].append((worker, box))
    needed = max(1, math.ceil(len(answers) / 2))
    results = []
    for cluster in clusters:
        if len(cluster) < needed:
            continue
        boxes = [b for _, b in cluster]
        mean = _mean_box(boxes)
        labels = [b["label"] for b in boxes]
        label = max(sorted(set(labels)), key=labels.count)
        confidence = 0.0 if len(boxes) == 1 else round(sum(_iou(b, mean) for b in boxes) / len(boxes), 2)
        results.append((mean, label, confidence))
    return results


class FakeGroundTruth:
    """The fake service; use as a context manager, or `start()` / `stop()`."""

    def __init__(
        self,
        *,
        s3_endpoint: str | None = None,
        region: str = "us-east-1",
        account: str = DEFAULT_ACCOUNT,
        seed: int = 0,
        spam_rate: float = 0.1,
        init_seconds: float = 60,
        seconds_per_object: float = 30,
        advance_per_describe: float = 0.0,
        training_seconds: float = 600,
    ) -> None:
        self.s3_endpoint = s3_endpoint
        self.region = region
        self.account = account
        self.seed = seed
        self.spam_rate = spam_rate
        self.init_seconds = init_seconds
        self.seconds_per_object = seconds_per_object
        self.advance_per_describe = advance_per_describe
        self.training_seconds = training_seconds
        self.training_jobs: dict[str, FakeTrainingJob] = {}
        self.now = datetime.now(UTC).timestamp()
        self.requests: list[dict] = []
        self.jobs: dict[str, FakeJob] = {}
        self.workteams: dict[str, dict] = {}
        self.workforce: dict | None = None
        self.faults: list[Fault] = []
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._s3 = None

    # ------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeGroundTruth:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = fake._handle(self.command, self.path, dict(self.headers), body)
                self._send(status, payload)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST  # noqa: N815

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("x-amzn-RequestId", "fake-request")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGroundTruth:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------------- test controls

    def calls(self, operation: str | None = None) -> list[dict]:
        """Parameters of the SageMaker calls received (each retry counts), optionally of one operation."""
        return [r["params"] for r in self.requests if operation in (None, r["operation"]) and r["operation"]]

    def fail_next(self, operation: str, times: int = 1, code: str = "ThrottlingException", status: int = 400):
        """Answer the next `times` calls of `operation` ("*" = any) with an error."""
        with self._lock:
            self.faults.append(Fault(operation, code, status, remaining=times))

    def fail_rate(self, operation: str, rate: float, code: str = "ServiceUnavailable", status: int = 503):
        """Answer a share `rate` of the calls of `operation` ("*" = any) with an error (seeded)."""
        with self._lock:
            self.faults.append(Fault(operation, code, status, rate=rate))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def advance(self, seconds: float) -> None:
        """Move the clock; jobs progress and write their outputs."""
        with self._lock:
            self.now += seconds
            self._tick()

    def fail_job(self, name: str, reason: str = "ClientError: simulated failure") -> None:
        """End a running job Failed with `reason`."""
        with self._lock:
            job = self._job(name)
            job.status, job.failure_reason, job.modified = "Failed", reason, self.now

    def set_workforce(self, user_pool: str, client_id: str, name: str = "default") -> dict:
        """The Cognito workforce DescribeWorkforce reports."""
        with self._lock:
            self.workforce = {
                "WorkforceName": name,
                "WorkforceArn": f"arn:aws:sagemaker:{self.region}:{self.account}:workforce/{name}",
                "CognitoConfig": {"UserPool": user_pool, "ClientId": client_id},
                "SubDomain": f"abc123def4.labeling.{self.region}.sagemaker.aws",
                "Status": "Active",
                "CreateDate": self.now,
                "LastUpdatedDate": self.now,
            }
            return self.workforce

    # -------------------------------------------------------------------------- protocol

    def _handle(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
        target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
        service, _, operation = target.partition(".")
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {"raw": body[:200].decode(errors="replace")}
        with self._lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "operation": operation if service == "SageMaker" else None,
                    "target": target,
                    "params": params,
                }
            )
        if service != "SageMaker":
            return 400, {"__type": "UnknownOperationException", "message": f"not SageMaker: {method} {path}"}
        try:
            self._maybe_fault(operation)
            problems = validate_request("sagemaker", operation, params)
            if problems:
                raise ApiError("ValidationException", "; ".join(problems))
            handler = getattr(self, f"_op_{operation}", None)
            if handler is None:
                raise ApiError("UnknownOperationException", f"the fake does not serve {operation}")
            with self._lock:
                self._tick()
                return 200, handler(params)
        except ApiError as exc:
            return exc.status, {"__type": exc.code, "message": exc.message}

    def _maybe_fault(self, operation: str) -> None:
        with self._lock:
            for fault in self.faults:
                if fault.operation not in ("*", operation):
                    continue
                if fault.remaining is not None:
                    if fault.remaining <= 0:
                        continue
                    fault.remaining -= 1
                elif self._random.random() >= fault.rate:
                    continue
                raise ApiError(fault.code, f"fake fault injected into {operation}", fault.status)

    # -------------------------------------------------------------------- labeling jobs

    def _job(self, name: str) -> FakeJob:
        job = self.jobs.get(name.lower())
        if job is None:
            raise ApiError("ResourceNotFound", f"Could not find labeling job {name}")
        return job

    def _op_CreateLabelingJob(self, p: dict) -> dict:  # noqa: N802
        name, human = p["LabelingJobName"], p["HumanTaskConfig"]
        if name.lower() in self.jobs:
            raise ApiError("ResourceInUse", f"Labeling job {name} already exists")
        attribute = p["LabelAttributeName"]
        if attribute.endswith(("-metadata", "-ref")) or attribute in ("source", "source-ref"):
            raise ApiError("ValidationException", f"LabelAttributeName {attribute} is not allowed for boxes")
        for arn in (
            human.get("PreHumanTaskLambdaArn", ""),
            human["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"],
        ):
            if arn.split(":")[3:4] != [self.region]:
                raise ApiError("ValidationException", f"{arn} is not in {self.region}")
        public = "workteam/public-crowd/" in human["WorkteamArn"]
        if public and (
            "PublicWorkforceTaskPrice" not in human
            or human.get("TaskAvailabilityLifetimeInSeconds", 0) > 43_200
        ):
            raise ApiError(
                "ValidationException", "the public workforce needs a price and a lifetime <= 43200"
            )
        arn = f"arn:aws:sagemaker:{self.region}:{self.account}:labeling-job/{name.lower()}"
        self.jobs[name.lower()] = FakeJob(request=p, arn=arn, created=self.now, modified=self.now)
        return {"LabelingJobArn": arn}

    def _op_DescribeLabelingJob(self, p: dict) -> dict:  # noqa: N802
        if self.advance_per_describe:
            self.now += self.advance_per_describe
            self._tick()
        job = self._job(p["LabelingJobName"])
        r = job.request
        described = {
            "LabelingJobStatus": job.status,
            "LabelCounters": self._counters(job),
            "CreationTime": job.created,
            "LastModifiedTime": job.modified,
            "JobReferenceCode": f"ref-{job.name.lower()}",
            "LabelingJobName": job.name,
            "LabelingJobArn": job.arn,
            **{
                k: r[k]
                for k in ("LabelAttributeName", "InputConfig", "OutputConfig", "RoleArn", "HumanTaskConfig")
            },
        }
        for key in ("LabelCategoryConfigS3Uri", "StoppingConditions", "Tags"):
            if key in r:
                described[key] = r[key]
        if job.failure_reason:
            described["FailureReason"] = job.failure_reason
        if job.output_uri:
            described["LabelingJobOutput"] = {"OutputDatasetS3Uri": job.output_uri}
        return described

    def _op_StopLabelingJob(self, p: dict) -> dict:  # noqa: N802
        job = self._job(p["LabelingJobName"])
        if job.status in TERMINAL:
            raise ApiError(
                "ValidationException", f"Labeling job {job.name} is {job.status} and cannot be stopped"
            )
        job.status, job.modified = "Stopping", self.now
        return {}

    def _op_ListLabelingJobs(self, p: dict) -> dict:  # noqa: N802
        summaries = []
        for job in self.jobs.values():
            if p.get("StatusEquals") not in (None, job.status):
                continue
            if p.get("NameContains", "").lower() not in job.name.lower():
                continue
            human = job.request["HumanTaskConfig"]
            summaries.append(
                {
                    "LabelingJobName": job.name,
                    "LabelingJobArn": job.arn,
                    "CreationTime": job.created,
                    "LastModifiedTime": job.modified,
                    "LabelingJobStatus": job.status,
                    "LabelCounters": self._counters(job),
                    "WorkteamArn": human["WorkteamArn"],
                    "PreHumanTaskLambdaArn": human.get("PreHumanTaskLambdaArn", ""),
                }
            )
        return {"LabelingJobSummaryList": summaries}

    # --------------------------------------------------------------------- training jobs

    def _training_job(self, name: str) -> FakeTrainingJob:
        job = self.training_jobs.get(name.lower())
        if job is None:
            raise ApiError("ValidationException", f"Requested resource not found: training job {name}")
        return job

    def _op_CreateTrainingJob(self, p: dict) -> dict:  # noqa: N802
        name = p["TrainingJobName"]
        if name.lower() in self.training_jobs:
            raise ApiError("ResourceInUse", f"Training job {name} already exists")
        image = p["AlgorithmSpecification"].get("TrainingImage", "")
        if f".{self.region}." not in image:
            raise ApiError("ValidationException", f"{image} is not an image of {self.region}")
        arn = f"arn:aws:sagemaker:{self.region}:{self.account}:training-job/{name.lower()}"
        self.training_jobs[name.lower()] = FakeTrainingJob(p, arn, created=self.now, modified=self.now)
        return {"TrainingJobArn": arn}

    def _op_DescribeTrainingJob(self, p: dict) -> dict:  # noqa: N802
        if self.advance_per_describe:
            self.now += self.advance_per_describe
            self._tick()
        job = self._training_job(p["TrainingJobName"])
        described = {
            **{k: v for k, v in job.request.items() if k != "Tags"},
            "TrainingJobArn": job.arn,
            "TrainingJobStatus": job.status,
            "SecondaryStatus": job.secondary,
            "CreationTime": job.created,
            "LastModifiedTime": job.modified,
            "ModelArtifacts": {"S3ModelArtifacts": job.model_uri} if job.model_uri else {},
        }
        if job.failure_reason:
            described["FailureReason"] = job.failure_reason
        return described

    def _op_StopTrainingJob(self, p: dict) -> dict:  # noqa: N802
        job = self._training_job(p["TrainingJobName"])
        if job.status != "InProgress":
            raise ApiError("ValidationException", f"Training job {job.name} is {job.status}")
        job.status, job.secondary, job.modified = "Stopping", "Stopping", self.now
        return {}

    def _train(self, job: FakeTrainingJob) -> None:
        """Starting, then Downloading (reads every channel as the algorithm would), Training, Completed."""
        elapsed = self.now - job.created
        if job.status == "Stopping":
            job.status = job.secondary = "Stopped"
        elif job.status != "InProgress" or elapsed < self.init_seconds:
            return
        elif job.secondary == "Starting":
            job.secondary = "Downloading"
            job.failure_reason = self._channel_problem(job)
            if job.failure_reason:
                job.status = job.secondary = "Failed"
        elif job.secondary == "Downloading":
            job.secondary = "Training"
        elif job.secondary == "Training" and elapsed >= self.init_seconds + self.training_seconds:
            output = job.request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
            job.model_uri = f"{output}/{job.name}/output/model.tar.gz"
            self._put(job.model_uri, b"fake model")
            job.status = job.secondary = "Completed"
        job.modified = self.now

    def _channel_problem(self, job: FakeTrainingJob) -> str | None:
        """Why a channel cannot be read: an empty prefix, a missing manifest, a line without an attribute."""
        for channel in job.request["InputDataConfig"]:
            source = channel["DataSource"]["S3DataSource"]
            if source["S3DataType"] == "S3Prefix":
                bucket, prefix = _split_s3(source["S3Uri"])
                if not self._s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount"):
                    return f"ClientError: no objects under {source['S3Uri']}"
                continue
            try:
                lines = [json.loads(x) for x in self._get(source["S3Uri"]).decode().splitlines() if x.strip()]
            except Exception as exc:  # SageMaker reports an unreadable channel as a ClientError
                return f"ClientError: cannot read channel {channel['ChannelName']}: {exc}"
            for number, line in enumerate(lines, 1):
                missing = [a for a in source.get("AttributeNames", []) if a not in line]
                if missing:
                    where = f"line {number} of {source['S3Uri']}"
                    return f"ClientError: attribute {missing[0]} not found in {where}"
        return None

    def _counters(self, job: FakeJob) -> dict:
        labeled = sum(1 for r in job.results.values() if r["answers"])
        total = len(job.lines)
        return {
            "TotalLabeled": labeled,
            "HumanLabeled": labeled,
            "MachineLabeled": 0,
            "FailedNonRetryableError": 0,
            "Unlabeled": max(0, total - labeled),
        }

    # ---------------------------------------------------------------------- work teams

    def _op_CreateWorkteam(self, p: dict) -> dict:  # noqa: N802
        name = p["WorkteamName"]
        if name.lower() in self.workteams:
            raise ApiError("ResourceInUse", f"Workteam {name} already exists")
        arn = f"arn:aws:sagemaker:{self.region}:{self.account}:workteam/private-crowd/{name}"
        self.workteams[name.lower()] = {
            "WorkteamName": name,
            "WorkteamArn": arn,
            "MemberDefinitions": p["MemberDefinitions"],
            "Description": p["Description"],
            "SubDomain": (self.workforce or {}).get(
                "SubDomain", f"abc123def4.labeling.{self.region}.sagemaker.aws"
            ),
            "CreateDate": self.now,
            "LastUpdatedDate": self.now,
            "WorkforceArn": f"arn:aws:sagemaker:{self.region}:{self.account}:workforce/default",
        }
        return {"WorkteamArn": arn}

    def _op_DescribeWorkteam(self, p: dict) -> dict:  # noqa: N802
        team = self.workteams.get(p["WorkteamName"].lower())
        if team is None:
            raise ApiError("ValidationException", f"Workteam {p['WorkteamName']} does not exist")
        return {"Workteam": team}

    def _op_ListWorkteams(self, p: dict) -> dict:  # noqa: N802
        contains = p.get("NameContains", "").lower()
        return {"Workteams": [t for k, t in sorted(self.workteams.items()) if contains in k]}

    def _op_DeleteWorkteam(self, p: dict) -> dict:  # noqa: N802
        if self.workteams.pop(p["WorkteamName"].lower(), None) is None:
            raise ApiError("ValidationException", f"Workteam {p['WorkteamName']} does not exist")
        return {"Success": True}

    def _op_DescribeWorkforce(self, p: dict) -> dict:  # noqa: N802
        if self.workforce is None or self.workforce["WorkforceName"] != p["WorkforceName"]:
            raise ApiError("ResourceNotFound", f"Workforce {p['WorkforceName']} not found")
        return {"Workforce": self.workforce}

    # --------------------------------------------------------------------- simulation

    def _s3_client(self):
        if self._s3 is None:
            import boto3

            session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
            self._s3 = session.client("s3", region_name=self.region, endpoint_url=self.s3_endpoint)
        return self._s3

    def _get(self, uri: str) -> bytes:
        bucket, key = _split_s3(uri)
        return self._s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def _put(self, uri: str, data: bytes) -> None:
        bucket, key = _split_s3(uri)
        self._s3_client().put_object(Bucket=bucket, Key=key, Body=data)

    def _stamp(self, offset: float = 0.0) -> datetime:
        return datetime.fromtimestamp(self.now + offset, UTC)

    def _tick(self) -> None:
        for job in self.jobs.values():
            if job.status == "Initializing" and self.now >= job.created + self.init_seconds:
                self._start(job)
            if job.status == "InProgress":
                self._progress(job)
            if job.status == "Stopping":
                self._finish(job, "Stopped")
        for training in self.training_jobs.values():
            self._train(training)

    def _start(self, job: FakeJob) -> None:
        """Read the job's inputs as Ground Truth does at start; a bad input fails the job."""
        try:
            manifest = self._get(job.request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"])
            categories = json.loads(self._get(job.request["LabelCategoryConfigS3Uri"]))
            template = self._get(job.request["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"]).decode()
            job.lines = [json.loads(line) for line in manifest.decode().splitlines() if line.strip()]
        except Exception as exc:  # Ground Truth reports any unreadable input as a ClientError
            job.status, job.failure_reason = "Failed", f"ClientError: cannot read the job's inputs: {exc}"
            job.modified = self.now
            return
        if categories.get("document-version") != "2018-11-28" or not categories.get("labels"):
            job.status, job.failure_reason = (
                "Failed",
                "ClientError: invalid label category configuration file",
            )
            job.modified = self.now
            return
        job.labels = [c["label"] for c in categories["labels"]]
        element = _ELEMENT_NAME.search(template)
        job.element_name = element.group(1) if element else "boundingBox"
        prior = _PRIOR_ATTRIBUTE.search(template)
        job.prior_attribute = prior.group(1) if prior else None
        job.started = job.created + self.init_seconds
        job.status, job.modified = "InProgress", self.now

    def _progress(self, job: FakeJob) -> None:
        assert job.started is not None
        due = min(len(job.lines), int((self.now - job.started) // self.seconds_per_object))
        new = [i for i in range(due) if i not in job.results]
        for i in new:
            job.results[i] = self._answer(job, i)
        if new:
            job.modified = self.now
            self._write_consolidation(job, new)
        if len(job.results) == len(job.lines):
            self._finish(job, "Completed")

    def _label_for(self, job: FakeJob, label: str) -> str:
        return label if label in job.labels else job.labels[0]

    def _answer(self, job: FakeJob, index: int) -> dict:
        """Object `index`'s worker answers (from the pedestrian data) and their consolidation."""
        records = pedestrian_records()
        record = records[index % len(records)]
        workers = record["workers"]
        human = job.request["HumanTaskConfig"]
        crowd = "public" if "public-crowd" in human["WorkteamArn"] else "private"
        rng = random.Random(f"{self.seed}/{job.name}/{index}")
        answers = []
        for slot in range(human["NumberOfHumanWorkersPerDataObject"]):
            worker = workers[slot % len(workers)]
            worker_id, boxes = worker["worker"], worker["boxes"]
            if rng.random() < self.spam_rate:
                worker_id = f"spammer{rng.randint(1, 3)}"
                boxes = [
                    {
                        "label": "pedestrian",
                        "left": rng.uniform(0, 1100),
                        "top": rng.uniform(0, 600),
                        "width": rng.uniform(5, 180),
                        "height": rng.uniform(5, 120),
                    }
                    for _ in range(rng.randint(1, 3))
                ]
            answers.append(
                {
                    "worker_id": f"{crowd}.{self.region}.{worker_id}",
                    "boxes": [
                        {
                            "label": self._label_for(job, b["label"]),
                            "left": max(0, round(b["left"])),
                            "top": max(0, round(b["top"])),
                            "width": max(1, round(b["width"])),
                            "height": max(1, round(b["height"])),
                        }
                        for b in boxes
                    ],
                    "seconds": round(rng.uniform(10, 90), 3),
                }
            )
        return {"answers": answers, "boxes": consolidate([a["boxes"] for a in answers]), "at": self.now}

    def _worker_response(self, job: FakeJob, result: dict) -> dict:
        entries = []
        for answer in result["answers"]:
            entry = {
                "acceptanceTime": self._iso(result["at"] - answer["seconds"]),
                "submissionTime": self._iso(result["at"]),
                "timeSpentInSeconds": answer["seconds"],
                "workerId": answer["worker_id"],
                "answerContent": {
                    job.element_name: {
                        "boundingBoxes": answer["boxes"],
                        "inputImageProperties": {"height": IMAGE_HEIGHT, "width": IMAGE_WIDTH},
                    }
                },
            }
            if answer["worker_id"].startswith("private."):
                entry["workerMetadata"] = {
                    "identityData": {
                        "identityProviderType": "Cognito",
                        "issuer": f"https://cognito-idp.{self.region}.amazonaws.com/{self.region}_fake",
                        "sub": answer["worker_id"].rsplit(".", 1)[-1],
                    }
                }
            entries.append(entry)
        return {"answers": entries}

    @staticmethod
    def _iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def _label(self, job: FakeJob, index: int) -> dict:
        """The `<attr>` and `<attr>-metadata` Ground Truth adds to line `index`."""
        attribute = job.request["LabelAttributeName"]
        result = job.results[index]
        annotations, objects, used = [], [], {}
        for box, label, confidence in result["boxes"]:
            class_id = job.labels.index(label)
            used[str(class_id)] = label
            annotations.append({"class_id": class_id, **{k: round(v) for k, v in box.items()}})
            objects.append({"confidence": confidence})
        metadata = {
            "objects": objects,
            "class-map": dict(sorted(used.items(), key=lambda kv: int(kv[0]))),
            "type": "groundtruth/object-detection",
            "human-annotated": "yes",
            "creation-date": datetime.fromtimestamp(result["at"], UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
            "job-name": f"labeling-job/{job.name.lower()}",
        }
        if job.prior_attribute:
            prior = job.lines[index].get(job.prior_attribute, {}).get("annotations", [])
            strip = [{k: a[k] for k in ("left", "top", "width", "height")} for a in annotations]
            before = [{k: a[k] for k in ("left", "top", "width", "height")} for a in prior]
            metadata["adjustment-status"] = "unadjusted" if strip == before else "adjusted"
        size = [{"width": IMAGE_WIDTH, "height": IMAGE_HEIGHT, "depth": 3}]
        return {
            attribute: {"image_size": size, "annotations": annotations},
            f"{attribute}-metadata": metadata,
        }

    def _write_consolidation(self, job: FakeJob, indexes: list[int]) -> None:
        stamp = self._stamp().strftime("%Y-%m-%d_%H:%M:%S")
        for i in indexes:
            key = f"annotations/worker-response/iteration-1/{i}/{stamp}.json"
            self._put(job.prefix + key, json.dumps(self._worker_response(job, job.results[i])).encode())
        consolidated = [
            {"datasetObjectId": str(i), "consolidatedAnnotation": {"content": self._label(job, i)}}
            for i in indexes
        ]
        key = f"annotations/consolidated-annotation/consolidation-response/iteration-1/{stamp}.json"
        self._put(job.prefix + key, json.dumps(consolidated).encode())

    def _finish(self, job: FakeJob, status: str) -> None:
        lines = []
        for i, line in enumerate(job.lines):
            labeled = i in job.results
            lines.append(
                json.dumps({**line, **self._label(job, i)} if labeled else line, separators=(",", ":"))
            )
        job.output_uri = job.prefix + "manifests/output/output.manifest"
        self._put(job.output_uri, ("\n".join(lines) + "\n").encode() if lines else b"")
        job.status, job.modified = status, self.now


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(name="groundtruth")
def groundtruth_fixture(aws: str, monkeypatch) -> Iterator[FakeGroundTruth]:
    """The fake Ground Truth, reached through AWS_ENDPOINT_URL_SAGEMAKER; S3 is the moto server."""
    with FakeGroundTruth(s3_endpoint=aws) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", fake.url)
        yield fake
