"""The hand-off to training: a labeled manifest checked and split into channels, and a SageMaker
training job launched and followed like a labeling job (docs/training.md)."""

from orchestrator.training.data import TrainingData, TrainingSource, load_training_data, resolve_source
from orchestrator.training.job import (
    TRAINING_BACKEND,
    TrainingPlan,
    launch_training,
    plan_training,
    poll_training,
    prepare_training,
    stop_training,
)
from orchestrator.training.object_detection import ALGORITHM
from orchestrator.training.request import DEFAULT_INSTANCE_TYPE

__all__ = [
    "ALGORITHM",
    "DEFAULT_INSTANCE_TYPE",
    "TRAINING_BACKEND",
    "TrainingData",
    "TrainingPlan",
    "TrainingSource",
    "launch_training",
    "load_training_data",
    "plan_training",
    "poll_training",
    "prepare_training",
    "resolve_source",
    "stop_training",
]
