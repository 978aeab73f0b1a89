"""The CreateTrainingJob request of `--algorithm yolo-script`: SageMaker's PyTorch container running
`scripts/yolo_train.py` (Ultralytics YOLO) on the YOLO export of each channel (docs/training.md).

Hyperparameters are JSON-encoded, as SageMaker's framework containers read them; `sagemaker_program`
and `sagemaker_submit_directory` name the script and the source archive labeljob uploads.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.training.request import CHANNELS, job_request, sagemaker_module

if TYPE_CHECKING:
    from orchestrator.training.data import TrainingData

ALGORITHM = "yolo-script"
SCRIPT = "yolo_train.py"
SCRIPTS = Path(__file__).resolve().parent / "scripts"
FRAMEWORK_VERSION, PY_VERSION = "2.1", "py310"
HYPERPARAMETERS = {"model": "yolov8n.pt", "epochs": 50, "imgsz": 640, "batch": 16}


def image_uri(region: str, instance_type: str) -> str:
    """SageMaker's PyTorch training container for the region and instance type, from the SDK's table."""
    return sagemaker_module("image_uris").retrieve(
        "pytorch",
        region,
        version=FRAMEWORK_VERSION,
        py_version=PY_VERSION,
        instance_type=instance_type,
        image_scope="training",
    )


def source_archive() -> bytes:
    """sourcedir.tar.gz with the script and its requirements; fixed timestamps keep it byte-identical."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name in (SCRIPT, "requirements.txt"):
                data = (SCRIPTS / name).read_bytes()
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def training_request(
    data: TrainingData, *, image: str, channel_uris: dict[str, str], source_uri: str, region: str, **job
) -> dict:
    """The exact CreateTrainingJob parameters; `job` as `request.job_request` takes them."""
    hyperparameters = {
        **HYPERPARAMETERS,
        "names": json.dumps(data.classes),
        "sagemaker_program": SCRIPT,
        "sagemaker_submit_directory": source_uri,
        "sagemaker_region": region,
    }
    channels = [
        {
            "ChannelName": channel,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": channel_uris[channel],
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        }
        for channel in CHANNELS
    ]
    return job_request(
        image=image,
        input_mode="File",
        channels=channels,
        hyperparameters={key: json.dumps(value) for key, value in hyperparameters.items()},
        **job,
    )
