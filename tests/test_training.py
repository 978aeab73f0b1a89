"""`labeljob train` against moto (S3, IAM) and the fake SageMaker: bad manifests refused before any call,
the dry-run request valid in three regions, and a training job launched, polled and reported."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import boto3
import pytest
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.service_model import validate_request

BUCKET = "training-data"
ROLE_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
CLASSES = ["car", "sign"]


def run(*args: str, region: str = "us-east-1", workspace: str = f"s3://{BUCKET}/labeljob"):
    base = ["--region", region, "--workspace", workspace, "--format", "json"]
    return CliRunner().invoke(app, [*base, *args])


def manifest_lines(counts: dict[str, int], bucket: str = BUCKET) -> list[dict]:
    """One image a box of each class in `counts`, labeled under `bbox` as Ground Truth writes it."""
    lines = []
    for class_id, label in enumerate(CLASSES):
        for i in range(counts.get(label, 0)):
            lines.append(
                {
                    "source-ref": f"s3://{bucket}/images/{label}-{i}.jpg",
                    "bbox": {
                        "image_size": [{"width": 640, "height": 480, "depth": 3}],
                        "annotations": [
                            {"class_id": class_id, "left": 10, "top": 20, "width": 64, "height": 48}
                        ],
                    },
                    "bbox-metadata": {
                        "objects": [{"confidence": 0.9}],
                        "class-map": {str(class_id): label},
                        "type": "groundtruth/object-detection",
                        "human-annotated": "yes",
                        "creation-date": "2026-12-04T20:00:00.000000",
                        "job-name": "labeling-job/street",
                    },
                }
            )
    return lines


@pytest.fixture
def account(aws):
    """A bucket per region of the tests and the execution role, in moto."""
    iam = boto3.client("iam", region_name="us-east-1")
    role = iam.create_role(RoleName="SageMakerTraining", AssumeRolePolicyDocument=json.dumps(ROLE_TRUST))
    return role["Role"]["Arn"]


def put_manifest(
    lines: list[dict], region: str = "us-east-1", bucket: str = BUCKET, key: str = "train.manifest"
):
    s3 = boto3.client("s3", region_name=region)
    config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket, **config)
    s3.put_object(
        Bucket=bucket, Key=f"manifests/{key}", Body="\n".join(json.dumps(x) for x in lines).encode()
    )
    return f"s3://{bucket}/manifests/{key}"


def train(manifest: str, role: str, *extra: str, region: str = "us-east-1", bucket: str = BUCKET):
    return run(
        "train", manifest, "--role", role, "--output", f"s3://{bucket}/training/", *extra, region=region
    )


def objects_under(prefix: str, bucket: str = BUCKET) -> list[str]:
    listed = boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


# ------------------------------------------------------------------------------ refused


def test_a_line_without_the_label_attribute_is_refused_before_any_call(account, groundtruth):
    lines = manifest_lines({"car": 80, "sign": 80})
    del lines[7]["bbox"]
    result = train(put_manifest(lines), account, "--yes")
    assert result.exit_code == 1, result.output
    assert "label attribute bbox" in result.stderr and "missing" in result.stderr
    assert groundtruth.calls() == []
    assert objects_under("training/") == []


def test_a_class_under_50_images_is_refused_before_any_call(account, groundtruth):
    result = train(put_manifest(manifest_lines({"car": 80, "sign": 45})), account, "--yes")
    assert result.exit_code == 1, result.output
    assert "under 50 train images: sign" in result.stderr
    assert groundtruth.calls() == []


def test_classes_out_of_balance_are_refused(account, groundtruth):
    result = train(put_manifest(manifest_lines({"car": 300, "sign": 70})), account, "--yes")
    assert result.exit_code == 1, result.output
    assert "class balance" in result.stderr
    assert groundtruth.calls() == []


def test_a_bucket_in_another_region_and_a_missing_role_are_refused(account, groundtruth):
    manifest = put_manifest(manifest_lines({"car": 80, "sign": 80}), region="eu-west-1", bucket="eu-data")
    role = account.replace("SageMakerTraining", "NoSuchRole")
    result = train(manifest, role, "--yes", bucket="eu-data")
    assert result.exit_code == 1, result.output
    assert "bucket eu-data: in eu-west-1, the job in us-east-1" in result.stderr
    assert "role: NoSuchRole" in result.stderr
    assert groundtruth.calls() == []


def test_the_dry_run_reports_every_failed_check_and_exits_1(account):
    lines = manifest_lines({"car": 80, "sign": 45})
    lines[0]["source-ref"] = "file:///tmp/car-0.jpg"
    result = train(put_manifest(lines), account, "--dry-run")
    assert result.exit_code == 1, result.output
    checks = {c["name"]: c["status"] for c in json.loads(result.stdout)["preflight"]}
    assert checks["images"] == "fail" and checks["images per class (at least 50)"] == "fail"
    assert checks["request"] == "ok" and checks["role"] == "ok"


def test_an_unknown_instance_type_fails_the_service_model(account):
    result = train(
        put_manifest(manifest_lines({"car": 60, "sign": 60})), account, "--instance-type", "ml.x9.huge"
    )
    assert result.exit_code == 1
    assert "request: CreateTrainingJobRequest.ResourceConfig.InstanceType" in result.stderr


def test_without_the_sdk_a_one_line_error_says_how_to_install_it(account, monkeypatch):
    monkeypatch.setitem(sys.modules, "sagemaker", None)
    monkeypatch.setitem(sys.modules, "sagemaker.image_uris", None)
    result = train(put_manifest(manifest_lines({"car": 60, "sign": 60})), account, "--dry-run")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: the sagemaker SDK is not installed",
        "Hint: pip install 'labeljob[train]'",
    ]


def test_labeljob_starts_without_importing_the_sdk():
    code = "import sys, orchestrator.cli.app, orchestrator.lambdas; sys.exit('sagemaker' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-northeast-1"])
def test_the_dry_run_prints_a_request_the_service_model_accepts(account, region, api_calls):
    bucket = f"data-{region}"
    lines = manifest_lines({"car": 120, "sign": 90}, bucket=bucket)
    lines[3]["bbox"]["annotations"] *= 80  # one crowded image: label_width must make room for it
    manifest = put_manifest(lines, region=region, bucket=bucket)
    api_calls.clear()
    result = train(manifest, account, "--dry-run", region=region, bucket=bucket)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert all(check["status"] == "ok" for check in plan["preflight"])
    request = plan["requests"][-1]
    assert request["operation"] == "sagemaker:CreateTrainingJob" and request["region"] == region
    params = request["params"]
    assert validate_request("sagemaker", "CreateTrainingJob", params) == []
    assert (
        f".dkr.ecr.{region}.amazonaws.com/object-detection:"
        in params["AlgorithmSpecification"]["TrainingImage"]
    )
    assert params["AlgorithmSpecification"]["TrainingInputMode"] == "Pipe"
    channels = {c["ChannelName"]: c for c in params["InputDataConfig"]}
    assert set(channels) == {"train", "validation"}
    for c in channels.values():
        assert c["DataSource"]["S3DataSource"]["S3DataType"] == "AugmentedManifestFile"
        assert c["DataSource"]["S3DataSource"]["AttributeNames"] == ["source-ref", "bbox"]
        assert (c["RecordWrapperType"], c["ContentType"]) == ("RecordIO", "application/x-recordio")
    puts = {r["uri"]: r["lines"] for r in plan["requests"][:-1]}
    train_uri = channels["train"]["DataSource"]["S3DataSource"]["S3Uri"]
    validation_uri = channels["validation"]["DataSource"]["S3DataSource"]["S3Uri"]
    assert puts[train_uri] + puts[validation_uri] == len(lines) and puts[validation_uri] > 0
    hyper = params["HyperParameters"]
    assert hyper["num_classes"] == "2"
    assert hyper["num_training_samples"] == str(puts[train_uri])
    assert int(hyper["label_width"]) >= 2 + 5 * 80
    # Only reads: the manifest, the identity, the bucket's region and the role; nothing is written.
    assert {op for _, op, _ in api_calls} <= {
        "GetObject",
        "GetCallerIdentity",
        "GetBucketLocation",
        "GetRole",
        "ListAttachedRolePolicies",
        "ListRolePolicies",
    }


def test_a_validation_manifest_is_its_own_channel(account):
    train_uri = put_manifest(manifest_lines({"car": 60, "sign": 60}))
    validation_uri = put_manifest(manifest_lines({"car": 5, "sign": 5}), key="validation.manifest")
    result = train(train_uri, account, "--validation", validation_uri, "--dry-run")
    assert result.exit_code == 0, result.output
    puts = [r["lines"] for r in json.loads(result.stdout)["requests"][:-1]]
    assert puts == [120, 10]


# ------------------------------------------------------------------------------- launch


def test_launch_poll_and_report_a_training_job(account, groundtruth):
    groundtruth.advance_per_describe = 400
    manifest = put_manifest(manifest_lines({"car": 70, "sign": 60}))
    launched = train(manifest, account, "--yes")
    assert launched.exit_code == 0, launched.output
    row = json.loads(launched.stdout)
    assert (row["backend"], row["status"], row["created"]) == ("sagemaker-training", "in_progress", True)
    name = row["name"]
    [created] = groundtruth.calls("CreateTrainingJob")
    assert created["TrainingJobName"] == name
    written = objects_under(f"training/{name}/input/")
    assert written == [f"training/{name}/input/train.manifest", f"training/{name}/input/validation.manifest"]

    again = train(manifest, account, "--yes")
    assert again.exit_code == 0 and json.loads(again.stdout)["created"] is False
    assert len(groundtruth.calls("CreateTrainingJob")) == 1

    waited = run("wait", name, "--interval", "0.01")
    assert waited.exit_code == 0, waited.output
    assert f"{name}: in_progress Downloading" in waited.stderr
    model = f"s3://{BUCKET}/training/{name}/output/model.tar.gz"
    assert json.loads(waited.stdout)["output_model"] == model
    status = json.loads(run("status", name).stdout)
    assert (status["status"], status["output_model"]) == ("completed", model)


def test_a_training_job_that_fails_makes_wait_exit_3_with_the_reason(account, groundtruth):
    groundtruth.advance_per_describe = 400
    launched = train(put_manifest(manifest_lines({"car": 60, "sign": 60})), account, "--yes")
    name = json.loads(launched.stdout)["name"]
    boto3.client("s3", region_name="us-east-1").delete_object(
        Bucket=BUCKET, Key=f"training/{name}/input/validation.manifest"
    )
    waited = run("wait", name, "--interval", "0.01")
    assert waited.exit_code == 3, waited.output
    assert "cannot read channel validation" in waited.stderr


def test_stop_a_training_job(account, groundtruth):
    launched = train(put_manifest(manifest_lines({"car": 60, "sign": 60})), account, "--yes")
    name = json.loads(launched.stdout)["name"]
    assert run("stop", name).exit_code == 0
    groundtruth.advance(1)
    assert json.loads(run("poll", name).stdout)["status"] == "stopped"


# --------------------------------------------------------------------------- demo, doctor


def test_the_demo_ends_with_its_train_dry_run_and_doctor_judges_the_job_alike(tmp_path, account):
    demo = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "demo")])
    assert demo.exit_code == 0, demo.output
    command = shlex.split(demo.stderr.strip().splitlines()[-1])
    assert command[0] == "labeljob" and "train" in command and command[-1] == "--dry-run"
    dry = CliRunner().invoke(app, ["--format", "json", *command[1:]])
    assert dry.exit_code == 1, dry.output
    checks = {c["name"]: c["status"] for c in json.loads(dry.stdout)["preflight"]}
    # The demo's images are local files, a few per class: the dry run says so, and the request is valid.
    assert checks["images"] == checks["images per class (at least 50)"] == "fail"
    assert checks["request"] == checks["label attribute bbox"] == "ok"

    workspace = command[command.index("--workspace") + 1]
    doctor = CliRunner().invoke(
        app,
        [
            "--workspace",
            workspace,
            "--format",
            "json",
            "doctor",
            str(tmp_path / "demo" / "job.toml"),
            "--train",
        ]
        + ["--role", account, "--output", f"s3://{BUCKET}/training/"],
    )
    assert doctor.exit_code == 1, doctor.output
    by_name = {c["name"]: c["status"] for c in json.loads(doctor.stdout)}
    assert by_name["images"] == by_name["images per class (at least 50)"] == "fail"
    assert by_name["label attribute bbox"] == "ok"


def test_a_missing_manifest_is_named_in_one_line(account):
    result = train(f"s3://{BUCKET}/manifests/nothing-here.manifest", account, "--dry-run")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: s3://{BUCKET}/manifests/nothing-here.manifest: bucket does not")
    assert "Hint: `labeljob manifest check` lists every problem" in result.stderr


def test_the_scheduled_poll_handler_follows_training_jobs(account, groundtruth, monkeypatch):
    from orchestrator.lambdas import poll_handler

    groundtruth.advance_per_describe = 400
    name = json.loads(train(put_manifest(manifest_lines({"car": 60, "sign": 60})), account, "--yes").stdout)[
        "name"
    ]
    monkeypatch.setenv("LABELJOB_WORKSPACE", f"s3://{BUCKET}/labeljob")
    assert poll_handler({}, None) == {name: "in_progress"}
    assert poll_handler({}, None) == {name: "completed"}
    assert poll_handler({}, None) == {}  # ended with its model: nothing left to poll


def test_a_long_training_job_gets_no_stuck_labeling_hint(account, groundtruth):
    from datetime import timedelta

    from orchestrator.jobs import JobStore
    from orchestrator.storage import open_store

    name = json.loads(train(put_manifest(manifest_lines({"car": 60, "sign": 60})), account, "--yes").stdout)[
        "name"
    ]
    jobs = JobStore(open_store(f"s3://{BUCKET}/labeljob", boto3.Session(region_name="us-east-1")))

    def hours_ago(record):
        record.last_progress_at -= timedelta(hours=5)

    jobs.update(name, hours_ago)
    assert json.loads(run("status", name).stdout)["hint"].startswith("no progress for 5.0 h")
    polled = json.loads(run("poll", name).stdout)
    assert (polled["status"], polled["hint"]) == ("in_progress", None)


# --------------------------------------------------------------------------- yolo-script


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-northeast-1"])
def test_the_yolo_script_request_passes_the_service_model(account, region):
    bucket = f"yolo-{region}"
    manifest = put_manifest(
        manifest_lines({"car": 80, "sign": 80}, bucket=bucket), region=region, bucket=bucket
    )
    result = train(manifest, account, "--algorithm", "yolo-script", "--dry-run", region=region, bucket=bucket)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    params = plan["requests"][-1]["params"]
    assert validate_request("sagemaker", "CreateTrainingJob", params) == []
    assert (
        f".dkr.ecr.{region}.amazonaws.com/pytorch-training:"
        in params["AlgorithmSpecification"]["TrainingImage"]
    )
    for channel in params["InputDataConfig"]:
        source = channel["DataSource"]["S3DataSource"]
        assert source["S3DataType"] == "S3Prefix" and source["S3Uri"].endswith(
            f"/input/{channel['ChannelName']}/"
        )
    hyper = {key: json.loads(value) for key, value in params["HyperParameters"].items()}
    assert hyper["sagemaker_program"] == "yolo_train.py" and json.loads(hyper["names"]) == CLASSES
    assert hyper["sagemaker_submit_directory"] == plan["requests"][-2]["uri"]
    assert hyper["sagemaker_submit_directory"].endswith("/source/sourcedir.tar.gz")


def test_a_yolo_script_job_gets_the_yolo_export_and_the_script(account, groundtruth):
    import io
    import tarfile
    from pathlib import Path

    groundtruth.advance_per_describe = 400
    manifest = put_manifest(manifest_lines({"car": 60, "sign": 60}))
    launched = train(manifest, account, "--algorithm", "yolo-script", "--yes")
    assert launched.exit_code == 0, launched.output
    name = json.loads(launched.stdout)["name"]
    assert "-yolo-" in name
    keys = objects_under(f"training/{name}/")
    for channel in ("train", "validation"):
        assert {
            f"training/{name}/input/{channel}/{f}" for f in ("classes.txt", "data.yaml", "images.csv")
        } <= set(keys)
    labels = [k for k in keys if "/labels/" in k]
    assert len(labels) == 120
    s3 = boto3.client("s3", region_name="us-east-1")
    archive = s3.get_object(Bucket=BUCKET, Key=f"training/{name}/source/sourcedir.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        script = tar.extractfile("yolo_train.py").read()
    shipped = Path(__file__).resolve().parents[1] / "orchestrator" / "training" / "scripts" / "yolo_train.py"
    assert script == shipped.read_bytes()
    waited = run("wait", name, "--interval", "0.01")
    assert waited.exit_code == 0, waited.output


def test_the_yolo_script_lays_out_both_channels_with_one_class_numbering(tmp_path):
    from orchestrator.outputs import AugmentedLine, export_lines
    from orchestrator.storage import LocalStore
    from orchestrator.training.scripts.yolo_train import prepare

    channels = {"train": manifest_lines({"car": 2, "sign": 1}), "validation": manifest_lines({"sign": 1})}
    for channel, lines in channels.items():
        augmented = [AugmentedLine.from_json(line, "bbox") for line in lines]
        # As write_inputs exports them: with the job's class list, so both channels number alike.
        export_lines(augmented, "yolo", LocalStore(tmp_path / "export" / channel), labels=["car", "sign"])
    fetched = []

    def fetch(uri, path):
        fetched.append((uri, path.relative_to(tmp_path / "work").as_posix()))
        path.write_bytes(b"image")

    data = prepare({c: tmp_path / "export" / c for c in channels}, tmp_path / "work", CLASSES, fetch)
    assert ("s3://training-data/images/sign-0.jpg", "validation/images/sign-0.jpg") in fetched
    assert len(fetched) == 4
    # `sign` is class 1 in both channels, and the script keeps that numbering.
    assert (tmp_path / "work/validation/labels/sign-0.txt").read_text().split()[0] == "1"
    assert (tmp_path / "work/train/labels/car-1.txt").read_text().split()[0] == "0"
    text = data.read_text()
    assert "train: train/images\nval: validation/images\n" in text and '  1: "sign"' in text


def test_a_line_the_yolo_export_cannot_read_stops_the_launch_before_the_call(account, groundtruth):
    lines = manifest_lines({"car": 60, "sign": 60})
    lines[4]["bbox-metadata"]["objects"] = []  # one box, no confidence for it
    result = train(put_manifest(lines), account, "--algorithm", "yolo-script", "--yes")
    assert result.exit_code == 1, result.output
    assert "a line the YOLO export cannot read" in result.stderr
    assert groundtruth.calls("CreateTrainingJob") == []
