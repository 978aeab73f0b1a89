"""The hand-off to training: a labeled manifest checked and split into channels, and a SageMaker
training job launched and followed like a labeling job (docs/training.md).

Names are imported from their module on first use: `labeljob --help` lists `train` without loading
the exports or the SDK.
"""

from orchestrator import lazy_exports

_EXPORTS = {
    "data": ["TrainingData", "TrainingSource", "load_training_data", "resolve_source"],
    "job": [
        "TRAINING_BACKEND",
        "TrainingPlan",
        "launch_training",
        "plan_training",
        "poll_training",
        "prepare_training",
        "stop_training",
    ],
    "object_detection": ["ALGORITHM"],
    "request": ["DEFAULT_INSTANCE_TYPE"],
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
