"""The evaluation protocol: training, tiled prediction, ``run``, ``fuse``, ``bench``.

Public API (imports are lazy so ``import stfcat.engine`` stays cheap)::

    run_experiment(model_id, dataset="demo", ...) -> RunResult      # stfcat run
    fuse_files(model_id, fine_ref=..., coarse_ref=..., coarse_target=..., out=...) -> Path  # stfcat fuse
    run_bench(models=..., datasets=..., budget="quick", out="results") -> dict  # stfcat bench
    train_model(model, cases, ...) -> TrainResult
    predict_case(model, case, ...) -> np.ndarray
    predict_scene({id: model}, read, shape, bands, ...) -> (predictions, seconds)  # the one tiled predictor
"""

from __future__ import annotations

from typing import Any

from .errors import EngineError

__all__ = ["EngineError", "fuse_files", "predict_case", "predict_scene", "run_bench", "run_experiment", "train_model"]

_LAZY = {
    "run_experiment": "stfcat.engine.run",
    "RunResult": "stfcat.engine.run",
    "fuse_files": "stfcat.engine.fuse",
    "run_bench": "stfcat.engine.bench",
    "train_model": "stfcat.engine.train",
    "TrainResult": "stfcat.engine.train",
    "predict_case": "stfcat.engine.predict",
    "predict_scene": "stfcat.engine.predict",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
