"""Training loop: a model's stages with its recipe's optimiser and scheduler, resumable.

Resumability: a checkpoint holds the position ``(stage, epoch, step)``, the model, optimisers,
schedulers, the torch/numpy/python RNG states, the patch sampler's generator state and the partial
epoch loss. Resuming restores all of them: the result equals an uninterrupted run.
SIGINT/SIGTERM set a flag that the loop checks between steps (never inside one), then the
checkpoint is written atomically and :class:`TrainingInterrupted` is raised. A second Ctrl-C
interrupts at once.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stfcat.models.base import Budget, FusionModel, Recipe, Stage

from .checkpoint import load_checkpoint, load_model_state, save_checkpoint
from .distributed import DistInfo, SyncedOptimizer, broadcast_parameters, local_slice
from .optim import make_optimizer, make_scheduler, with_lr

STOP_ENV = "STFCAT_STOP_AFTER_EPOCHS"
"""Test hook: stop (as if interrupted) after this many epochs in total."""


class TrainingInterrupted(Exception):
    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"training interrupted; checkpoint written to {checkpoint}" if checkpoint
                         else "training interrupted")
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch
    seconds: float = 0.0
    epochs: int = 0
    resumed: bool = False


def stage_plan(stages: list[Stage], epochs: int) -> list[int]:
    """Epochs of each stage: ``max(1, round(epochs * share))``."""
    return [max(1, round(epochs * s.share)) for s in stages]


def rng_state() -> dict[str, Any]:
    import torch

    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _StopFlag:
    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.requested:  # second signal: stop now
                raise KeyboardInterrupt
            self.requested = True

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _build_optimizers(model: FusionModel, stage: Stage, recipe: Recipe, lr: float | None, epochs: int):
    """Returns ({name: optimizer}, {name: scheduler or None})."""
    if stage.optimizers:
        opts = {k: make_optimizer(ps, with_lr(spec, lr)) for k, (ps, spec) in stage.optimizers.items()}
        specs = {k: spec for k, (_, spec) in stage.optimizers.items()}
    else:
        params = stage.params if stage.params is not None else model.parameters()
        opts = {"main": make_optimizer(params, recipe.optim, lr)}
        specs = {"main": recipe.optim}
    scheds = {k: make_scheduler(opts[k], specs[k], epochs) for k in opts}
    return opts, scheds


def _to_device(batch: dict, target, device, sl: slice | None):
    b = {k: (v[sl] if sl else v).to(device, non_blocking=True) for k, v in batch.items()}
    t = (target[sl] if sl else target).to(device, non_blocking=True)
    return b, t


def train_model(
    model: FusionModel,
    cases: list,
    *,
    recipe: Recipe,
    budget: Budget,
    seed: int = 0,
    device: Any = "cpu",
    lr: float | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    record: dict[str, Any] | None = None,
    dist: DistInfo | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    sampler_factory: Callable[..., Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place on random patches of ``cases`` (training cases with targets).

    ``record`` (model id, config, band names, scale) is stored in every checkpoint.
    ``sampler_factory(cases, patch, batch, seed=...)`` defaults to :class:`stfcat.data.PatchSampler`.
    """
    import torch
    from tqdm.auto import tqdm

    dist = dist or DistInfo()
    if sampler_factory is None:
        from stfcat.data.sampler import PatchSampler as sampler_factory  # noqa: N813
    if stop_after_epochs is None and os.environ.get(STOP_ENV):
        stop_after_epochs = int(os.environ[STOP_ENV])
    device = torch.device(device)
    model.to(device).train()
    stages = list(model.stages())
    plan = stage_plan(stages, budget.epochs)
    pos = {"stage": 0, "epoch": 0, "step": 0}
    result = TrainResult()
    partial = {"sum": {}, "n": 0}
    ck: dict[str, Any] | None = None
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        ck = load_checkpoint(Path(checkpoint), flag="--resume")
        load_model_state(model, ck, checkpoint, (record or {}).get("model_id"))
        tr = ck.get("train") or {}
        if tr.get("plan") not in (None, plan):
            from .errors import EngineError

            raise EngineError(f"--resume: checkpoint {checkpoint} was trained with stage epochs "
                              f"{tr.get('plan')}, this run asks for {plan} (same --epochs/--full-recipe?)")
        pos = dict(tr.get("pos", pos))
        result.history = list(tr.get("history", []))
        result.seconds = float(tr.get("seconds", 0.0))
        partial = tr.get("partial", partial)
        result.resumed = True
    broadcast_parameters(model, dist)
    # One sampler for the whole run, seeded by the run seed (the same on every rank: each rank
    # takes its slice of the same global batch); its generator state goes into checkpoints.
    sampler = sampler_factory(cases, budget.patch, budget.batch, seed=seed)
    sl = local_slice(budget.batch, dist) if dist.enabled else None
    stop = _StopFlag()
    epochs_done = sum(plan[: pos["stage"]]) + pos["epoch"]
    t_start = time.perf_counter() - result.seconds

    cur: dict[str, Any] = {"sums": {}, "n": 0}  # the running epoch's loss sums (see save)

    def save(opts, scheds, opt_stage: int) -> None:
        if checkpoint is None or not dist.is_main:
            return
        save_checkpoint(Path(checkpoint), {
            **(record or {}),
            "model_state": model.state_dict(),
            "train": {
                "plan": plan, "pos": dict(pos), "history": result.history,
                "partial": {"sum": {k: float(v) for k, v in cur["sums"].items()}, "n": cur["n"]},
                "seconds": time.perf_counter() - t_start,
                "optimizers": {k: o.state_dict() for k, o in opts.items()},
                "schedulers": {k: s.state_dict() for k, s in scheds.items() if s is not None},
                "opt_stage": opt_stage, "rng": rng_state(), "sampler_rng": sampler.rng.bit_generator.state, "done": pos["stage"] >= len(stages),
            },
        })

    def stop_now() -> bool:
        flag = stop.requested
        if dist.enabled:
            import torch.distributed as tdist

            t = torch.tensor([1.0 if flag else 0.0])
            tdist.all_reduce(t)
            flag = bool(t.item() > 0)
        return flag

    def chain(si: int) -> tuple[int, int]:
        """First stage and total epochs of the optimisation stage ``si`` belongs to (stages with
        ``continues`` share their predecessor's optimiser and scheduler)."""
        s0 = si
        while s0 > 0 and stages[s0].continues:
            s0 -= 1
        s1 = si + 1
        while s1 < len(stages) and stages[s1].continues:
            s1 += 1
        return s0, sum(plan[s0:s1])

    opts: dict = {}
    scheds: dict = {}
    with stop.installed():
        for si in range(pos["stage"], len(stages)):
            stage = stages[si]
            s0, chain_epochs = chain(si)
            if stage.continues and opts:
                pass  # same optimisation: keep the optimiser and scheduler of the previous stage
            else:
                opts, scheds = _build_optimizers(model, stages[s0], recipe, lr, chain_epochs)
            # resume: the saved optimiser belongs to this stage, or to an earlier stage of its chain
            saved = ck["train"].get("opt_stage") if ck is not None else None
            if saved is not None and s0 <= saved <= si:
                for k, o in opts.items():
                    o.load_state_dict(ck["train"]["optimizers"][k])
                for k, s in scheds.items():
                    if s is not None and k in ck["train"]["schedulers"]:
                        s.load_state_dict(ck["train"]["schedulers"][k])
            run_opts = {k: SyncedOptimizer(o, dist) for k, o in opts.items()} if dist.enabled else opts
            for ep in range(pos["epoch"], plan[si]):
                if ck is not None:  # first epoch after a resume: continue the saved random streams
                    set_rng_state(ck["train"]["rng"])
                    sampler.rng.bit_generator.state = ck["train"]["sampler_rng"]
                    ck = None
                # epoch sums stay on the device (float32: MPS has no float64) so no step waits
                # for a device-to-host copy; they become Python floats only when saved or logged
                sums: dict[str, Any] = {k: torch.tensor(v, dtype=torch.float32, device=device)
                                        for k, v in partial["sum"].items()}
                n = partial["n"]
                cur["sums"], cur["n"] = sums, n
                bar = tqdm(range(pos["step"], budget.steps_per_epoch), disable=not (progress and dist.is_main),
                           desc=f"{stage.name} epoch {ep + 1}/{plan[si]}", leave=False, unit="step")
                for step in bar:
                    batch, target = sampler.sample()
                    batch, target = _to_device(batch, target, device, sl)
                    if stage.loss is not None:
                        opt = run_opts["main"]
                        opt.zero_grad(set_to_none=True)
                        loss = stage.loss(batch, target)
                        loss.backward()
                        opt.step()
                        logs = {"loss": loss.detach()}
                    else:
                        logs = stage.step(batch, target, run_opts)
                    for k, v in logs.items():
                        v = torch.as_tensor(v, device=device).detach().to(torch.float32)
                        sums[k] = sums[k] + v if k in sums else v
                    n += 1
                    pos["step"] = step + 1
                    cur["n"] = n
                    if stop_now():
                        save(opts, scheds, si)
                        raise TrainingInterrupted(checkpoint)
                if dist.enabled and sums:  # log the global batch's loss, not this rank's half
                    import torch.distributed as tdist

                    keys = sorted(sums)
                    vec = torch.stack([sums[k] for k in keys])
                    tdist.all_reduce(vec)
                    sums = {k: v / dist.world_size for k, v in zip(keys, vec, strict=True)}
                means = {k: float(v) / max(n, 1) for k, v in sums.items()}
                result.history.append({"stage": stage.name, "epoch": ep + 1, **means})
                for s in scheds.values():
                    if s is None:
                        continue
                    if s.__class__.__name__ == "ReduceLROnPlateau":
                        s.step(means.get("loss", next(iter(means.values()), 0.0)))
                    else:
                        s.step()
                pos["epoch"], pos["step"] = ep + 1, 0
                partial = {"sum": {}, "n": 0}
                cur["sums"], cur["n"] = {}, 0
                epochs_done += 1
                if pos["epoch"] >= plan[si]:
                    pos = {"stage": si + 1, "epoch": 0, "step": 0}
                save(opts, scheds, si)
                if progress and dist.is_main:
                    shown = ", ".join(f"{k} {v:.5g}" for k, v in means.items())
                    tqdm.write(f"[{stage.name}] epoch {ep + 1}/{plan[si]}: {shown}")
                if stop_after_epochs is not None and epochs_done >= stop_after_epochs and pos["stage"] < len(stages):
                    raise TrainingInterrupted(checkpoint)
                if stop_now():
                    raise TrainingInterrupted(checkpoint)
            pos["epoch"] = 0
    result.seconds = time.perf_counter() - t_start
    result.epochs = epochs_done
    return result
