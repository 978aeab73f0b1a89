"""What every CreateTrainingJob request of labeljob shares, and the one door to the `sagemaker` SDK."""

from __future__ import annotations

import os

from orchestrator.errors import ConfigError

CHANNELS = ("train", "validation")
DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"
DEFAULT_MAX_RUNTIME_SECONDS = 24 * 3600
VOLUME_GB = 50


def sagemaker_module(name: str):
    """A module of the `sagemaker` SDK, imported only by the training command (the `[train]` extra)."""
    import importlib
    import logging

    # The v2 SDK prints a deprecation banner and config notes on import, noise on our users' stderr.
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    try:
        return importlib.import_module(f"sagemaker.{name}")
    except ImportError:
        raise ConfigError(
            "the sagemaker SDK is not installed", hint="pip install 'labeljob[train]'"
        ) from None


def job_request(
    *,
    name: str,
    image: str,
    input_mode: str,
    role_arn: str,
    output: str,
    channels: list[dict],
    hyperparameters: dict[str, str],
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_SECONDS,
) -> dict:
    """The exact CreateTrainingJob parameters: one instance, a 50 GB volume, the model under `output`."""
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": input_mode},
        "RoleArn": role_arn,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": 1, "VolumeSizeInGB": VOLUME_GB},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime_seconds},
        "HyperParameters": hyperparameters,
    }
