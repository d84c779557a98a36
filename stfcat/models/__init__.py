"""Model interface and registry (deep models live in ``code/``, importable as ``stfcat_zoo``)."""

from .base import Batch, Budget, FusionModel, OptimSpec, Recipe, Stage, count_parameters
from .registry import (
    ModelImportError,
    ModelInfo,
    RegistryError,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    register_model,
    scoped,
    variant_of,
)

__all__ = [
    "Batch", "Budget", "FusionModel", "ModelImportError", "ModelInfo", "OptimSpec", "Recipe", "RegistryError", "Stage",
    "UnknownModelError", "count_parameters", "create_model", "list_models", "model_info", "register_model",
    "scoped", "variant_of",
]
