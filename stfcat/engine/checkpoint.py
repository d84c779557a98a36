"""Checkpoints: atomic writes (temporary file + ``os.replace``) and a model record that
``stfcat fuse`` checks against the request (model id, bands).

A checkpoint holds plain data only (dicts, lists, tuples, strings, numbers, tensors; numpy arrays
are stored as tensors) and is read with ``torch.load(weights_only=True)``: a ``.pt`` that needs
anything else to unpickle (a crafted file that would run code) is refused, and nothing of it runs."""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

from .errors import EngineError
from .outputs import publish

FORMAT = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with ``torch.save`` so that a crash never leaves a half-written file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(plain_data({"format": FORMAT, **payload}), tmp)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plain_data(obj: Any) -> Any:
    """``obj`` with numpy arrays as tensors and numpy scalars as Python numbers, so that
    ``torch.load(weights_only=True)`` reads it back (``np.random.set_state`` accepts the tensor)."""
    import numpy as np
    import torch

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.astype(np.int64) if obj.dtype == np.uint32 else obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        out = {k: plain_data(v) for k, v in obj.items()}
        return OrderedDict(out) if isinstance(obj, OrderedDict) else out
    if isinstance(obj, list):
        return [plain_data(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain_data(v) for v in obj)
    return obj


def _numpy_globals() -> list:
    """The numpy constructors of plain arrays and scalars: checkpoints written before the plain-data
    format held the numpy RNG state as an array. They build data only (an object array's items still
    go through the weights-only unpickler), so allowing them runs no code."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in ("u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "?")]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def load_checkpoint(path: Path, *, flag: str = "checkpoint") -> dict[str, Any]:
    """Read a checkpoint weights-only; :class:`EngineError` naming ``flag`` and the file otherwise."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{flag} {path}: " + ("not a file" if path.exists() else "file not found"))
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        why = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        raise EngineError(f"{flag} {path}: refused: it holds objects other than tensors and plain data, which "
                          f"stfcat never unpickles (not an stfcat checkpoint, or a crafted one; {why[:160]})") from None
    except Exception as exc:  # noqa: BLE001 - any reading problem is a bad file for the user
        raise EngineError(f"{flag} {path}: not a readable stfcat checkpoint ({str(exc)[:200]})") from None
    if not isinstance(ckpt, dict) or "model_id" not in ckpt or "model_state" not in ckpt:
        raise EngineError(f"{flag} {path}: not an stfcat checkpoint (no model_id/model_state)")
    return ckpt


def load_model_state(model, ckpt: dict[str, Any], path: Path | str, model_id: str | None = None) -> None:
    """``model.load_state_dict`` that says which model the checkpoint belongs to on a mismatch."""
    owner = ckpt.get("model_id")
    if model_id is not None and owner != model_id:
        raise EngineError(f"{path}: this checkpoint belongs to model {owner!r}, not {model_id!r}; "
                          f"use `--model {owner}` or another checkpoint")
    try:
        model.load_state_dict(ckpt["model_state"])
    except (RuntimeError, KeyError, TypeError) as exc:
        cfg = ckpt.get("config") or {}
        raise EngineError(f"{path}: the weights of model {owner!r} (config {dict(cfg)}) do not fit this "
                          f"{model_id or 'model'!r} ({str(exc).splitlines()[0][:160]})") from None


def model_record(model_id: str, model, *, band_names: list[str] | None, scale_factor: float | None,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint says about the model, so inference can rebuild and check it."""
    return {
        "model_id": model_id,
        "config": {**model.config(), "overrides": dict(overrides or {})},
        "band_names": list(band_names) if band_names else None,
        "scale_factor": scale_factor,
    }


def model_from_checkpoint(ckpt: dict[str, Any], model_id: str, *, bands: int, path: Path | str = "checkpoint"):
    """Rebuild the model a checkpoint was trained as, refusing a mismatch with the request."""
    from stfcat.models import create_model

    if ckpt["model_id"] != model_id:
        raise EngineError(f"{path}: trained for model {ckpt['model_id']!r} (the checkpoint belongs to it), "
                          f"not {model_id!r} (--model)")
    cfg = dict(ckpt.get("config") or {})
    if int(cfg.get("bands", bands)) != bands:
        raise EngineError(f"{path}: model has {cfg.get('bands')} bands but the input images have {bands}")
    model = create_model(model_id, bands=bands, ratio=int(cfg.get("ratio", 16)), **cfg.get("overrides", {}))
    load_model_state(model, ckpt, path, model_id)
    return model
