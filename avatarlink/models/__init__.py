"""Pose models: one adapter module per model family, and the registry that names them.

Adding a model = one adapter module (when its family is new) + one :data:`MODELS` entry.
"""

from avatarlink.models.base import EstimateResult, PoseEstimator
from avatarlink.models.registry import MODELS, ModelSpec, create_estimator, get_spec, models_dir

__all__ = [
    "MODELS",
    "EstimateResult",
    "ModelSpec",
    "PoseEstimator",
    "create_estimator",
    "get_spec",
    "models_dir",
]
