"""Checkpoints: atomic writes (temporary file + ``os.replace``) and a model record that
``stfcat fuse`` checks against the request (model id, bands)."""

from __future__ import annotations

import os
import tempfile
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
        torch.save({"format": FORMAT, **payload}, tmp)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise EngineError(f"checkpoint {path}: file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        raise EngineError(f"checkpoint {path}: not a readable stfcat checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or "model_id" not in ckpt or "model_state" not in ckpt:
        raise EngineError(f"checkpoint {path}: not an stfcat checkpoint (no model_id/model_state)")
    return ckpt


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
        raise EngineError(f"{path}: trained for model {ckpt['model_id']!r}, not {model_id!r} (--model)")
    cfg = dict(ckpt.get("config") or {})
    if int(cfg.get("bands", bands)) != bands:
        raise EngineError(f"{path}: model has {cfg.get('bands')} bands but the input images have {bands}")
    model = create_model(model_id, bands=bands, ratio=int(cfg.get("ratio", 16)), **cfg.get("overrides", {}))
    model.load_state_dict(ckpt["model_state"])
    return model
