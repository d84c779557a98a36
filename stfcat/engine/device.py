"""Device selection and CPU threading."""

from __future__ import annotations

import os
import sys

from .errors import EngineError


def resolve_device(name: str = "auto", *, quiet: bool = False):
    """``auto`` -> cuda, then mps, then cpu (saying so when it falls back); ``cuda``/``mps``
    that are absent are an :class:`EngineError`."""
    import torch

    name = (name or "auto").lower()
    if name not in {"auto", "cpu", "cuda", "mps"} and not name.startswith("cuda:"):
        raise EngineError(f"--device {name!r}: choose auto, cpu, cuda or mps")
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps:
            return torch.device("mps")
        if not quiet:
            print("no CUDA or MPS device found: running on CPU", file=sys.stderr)
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"--device {name}: CUDA is not available here (use --device auto or cpu)")
    if name == "mps" and not mps:
        raise EngineError("--device mps: MPS is not available here (use --device auto or cpu)")
    return torch.device(name)


def use_all_cores(world_size: int = 1) -> int:
    """Give torch every core (shared between ranks of a local distributed run);
    ``STFCAT_NUM_THREADS`` overrides (shared machines, benchmarks)."""
    import torch

    env = os.environ.get("STFCAT_NUM_THREADS")
    n = int(env) if env else max(1, (os.cpu_count() or 1) // max(1, world_size))
    torch.set_num_threads(n)
    return n
