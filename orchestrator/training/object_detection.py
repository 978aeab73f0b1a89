"""The CreateTrainingJob request for SageMaker's built-in Object Detection algorithm on augmented manifests.

Channels are `AugmentedManifestFile` with `AttributeNames = ["source-ref", <label attribute>]`,
RecordIO-wrapped (`application/x-recordio`); SageMaker streams augmented manifests only in Pipe
mode. The hyperparameters are explained in docs/training.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.errors import ConfigError
from orchestrator.training.request import CHANNELS, job_request, sagemaker_module

if TYPE_CHECKING:
    from orchestrator.training.data import TrainingData

ALGORITHM = "object-detection"
# The algorithm pads every image's label to label_width values: a 2-value header, then 5 values
# (class_id, left, top, width, height) a box; 350 is its default and fits 69 boxes.
LABEL_HEADER, VALUES_PER_BOX, DEFAULT_LABEL_WIDTH = 2, 5, 350
MAX_MINI_BATCH = 16

HYPERPARAMETERS = {
    "base_network": "resnet-50",
    "use_pretrained_model": "1",
    "epochs": "30",
    "learning_rate": "0.001",
    "lr_scheduler_factor": "0.1",
    "optimizer": "sgd",
    "momentum": "0.9",
    "weight_decay": "0.0005",
    "overlap_threshold": "0.5",
    "nms_threshold": "0.45",
    "image_shape": "512",
    "early_stopping": "True",
}


def image_uri(region: str) -> str:
    """The algorithm's container in `region`, from the SDK's table (no network call)."""
    try:
        return sagemaker_module("image_uris").retrieve(ALGORITHM, region)
    except ValueError as exc:
        raise ConfigError(
            f"{region}: {str(exc).split('. ')[0]}",
            hint=f"pass --region with a region where SageMaker has {ALGORITHM}",
        ) from None


def hyperparameters(data: TrainingData) -> dict[str, str]:
    """The documented defaults, with the counts only the manifests know (values are strings)."""
    samples = len(data.channels["train"])
    label_width = max(DEFAULT_LABEL_WIDTH, LABEL_HEADER + VALUES_PER_BOX * data.max_boxes)
    return {
        **HYPERPARAMETERS,
        "num_classes": str(len(data.classes)),
        "num_training_samples": str(samples),
        "mini_batch_size": str(max(1, min(MAX_MINI_BATCH, samples))),
        "label_width": str(label_width),
    }


def channel(name: str, manifest_uri: str, attribute: str) -> dict:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "AugmentedManifestFile",
                "S3Uri": manifest_uri,
                "S3DataDistributionType": "FullyReplicated",
                "AttributeNames": ["source-ref", attribute],
            }
        },
        "ContentType": "application/x-recordio",
        "RecordWrapperType": "RecordIO",
        "CompressionType": "None",
    }


def training_request(data: TrainingData, *, image: str, channel_uris: dict[str, str], **job) -> dict:
    """The exact CreateTrainingJob parameters; `job` as `request.job_request` takes them."""
    channels = [channel(c, channel_uris[c], data.attribute) for c in CHANNELS]
    return job_request(
        image=image, input_mode="Pipe", channels=channels, hyperparameters=hyperparameters(data), **job
    )
