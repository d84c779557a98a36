"""Training loop: a model's stages with its recipe's optimiser and scheduler, resumable.

:class:`TrainState` holds everything a run's future depends on: the position ``(stage, epoch,
step)``, the model, the stage's optimisers and schedulers, the sample source, the torch/numpy/
python RNG states, the partial epoch's loss sums, the EMA weights, the fp16 gradient scaler and
the validation bookkeeping. ``state_dict()``/``load_state_dict()`` round-trip all of it, so an
interrupted and resumed run equals an uninterrupted one bit for bit (on CPU).

:func:`train_model` is the loop; it talks to the outside only through hooks (:class:`Hook`:
checkpoint, progress, anything a caller adds) and an optional ``validate(model) -> score``
callable (lower is better). SIGINT/SIGTERM, or a hook calling ``loop.request_stop()``, raise a
flag that the loop checks between steps (never inside one); the checkpoint hook then writes the
state and :class:`TrainingInterrupted` is raised. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stfcat.models.base import Budget, FusionModel, Recipe, Stage

from .batches import WorkerBatches, load_sampler_state, next_batch, sampler_state
from .checkpoint import load_checkpoint, load_model_state
from .distributed import DistInfo, average_gradients, broadcast_parameters, local_slice
from .hooks import CheckpointHook, Hook, ProgressHook
from .optim import EMA, make_optimizer, make_scheduler, with_lr


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
    best: dict[str, Any] | None = None  # {"epoch", "score"} of the selected checkpoint (select="best")
    stopped_early: bool = False


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


def note(msg: str) -> None:
    """A one-line remark for the user (stderr, so it never mixes with tables or JSON)."""
    print(msg, file=sys.stderr)


# --------------------------------------------------------------------------- pieces of the state

class StopFlag:
    """Raised by SIGINT/SIGTERM (while installed) or by ``request()``."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True

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


class _StepOptimizer:
    """What a custom-step stage receives: ``step`` averages gradients over ranks, clips them to
    the recipe's bound, then steps the optimiser."""

    def __init__(self, optimizer, dist: DistInfo, clip: float | None) -> None:
        self._opt, self._dist, self._clip = optimizer, dist, clip

    def step(self, *args, **kwargs):
        params = [p for g in self._opt.param_groups for p in g["params"]]
        average_gradients(params, self._dist)
        if self._clip is not None:
            import torch

            torch.nn.utils.clip_grad_norm_(params, self._clip)
        return self._opt.step(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._opt, name)


def _to_device(batch: dict, target, device, sl: slice | None):
    b = {k: (v[sl] if sl else v).to(device, non_blocking=True) for k, v in batch.items()}
    t = (target[sl] if sl else target).to(device, non_blocking=True)
    return b, t


# --------------------------------------------------------------------------- state

class TrainState:
    """The whole state of a training run (see the module docstring)."""

    def __init__(self, model: FusionModel, sampler, *, recipe: Recipe, budget: Budget, plan: list[int],
                 stages: list[Stage], lr: float | None, device, dist: DistInfo) -> None:
        self.model, self.sampler, self.recipe, self.budget = model, sampler, recipe, budget
        self.plan, self.stages, self.lr, self.device, self.dist = plan, stages, lr, device, dist
        self.pos = {"stage": 0, "epoch": 0, "step": 0}
        self.history: list[dict[str, Any]] = []
        self.sums: dict[str, Any] = {}  # the running epoch's loss sums (device tensors)
        self.n = 0
        self.seconds = 0.0
        self.opts: dict[str, Any] = {}
        self.scheds: dict[str, Any] = {}
        self.opt_stage: int | None = None
        self._pending_opt: dict[str, Any] | None = None  # optimiser states waiting for their stage
        self.ema = EMA(model, recipe.ema_decay) if recipe.ema_decay is not None else None
        self.amp_dtype, self.scaler = _amp_setup(recipe.amp, device)
        self.best: dict[str, Any] | None = None  # {"score", "epoch", "model_state"}
        self.bad_epochs = 0
        self.stopped_early = False
        self.stop = StopFlag()

    # ---- position
    @property
    def done(self) -> bool:
        return self.stopped_early or self.pos["stage"] >= len(self.stages)

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    def request_stop(self) -> None:
        """Stop between steps as an interruption would (checkpoint, then TrainingInterrupted)."""
        self.stop.request()

    def chain(self, si: int) -> tuple[int, int]:
        """First stage and total epochs of the optimisation stage ``si`` belongs to (stages with
        ``continues`` share their predecessor's optimiser and scheduler)."""
        s0 = si
        while s0 > 0 and self.stages[s0].continues:
            s0 -= 1
        s1 = si + 1
        while s1 < len(self.stages) and self.stages[s1].continues:
            s1 += 1
        return s0, sum(self.plan[s0:s1])

    def enter_stage(self, si: int) -> None:
        """Build (or, for ``continues``, keep) the stage's optimisers and schedulers, and load saved
        ones when the saved optimiser belongs to this stage or an earlier stage of its chain."""
        s0, chain_epochs = self.chain(si)
        if not (self.stages[si].continues and self.opts):
            self.opts, self.scheds = _build_optimizers(self.model, self.stages[s0], self.recipe, self.lr,
                                                       chain_epochs, self.budget.steps_per_epoch)
        saved = self._pending_opt
        if saved is not None and saved["opt_stage"] is not None and s0 <= saved["opt_stage"] <= si:
            for k, o in self.opts.items():
                o.load_state_dict(saved["optimizers"][k])
            for k, s in self.scheds.items():
                if s is not None and k in saved["schedulers"]:
                    s.load_state_dict(saved["schedulers"][k])
        self._pending_opt = None
        self.opt_stage = si

    # ---- weights used for evaluation and the checkpoint
    def eval_state(self) -> dict[str, Any]:
        return self.ema.state_dict() if self.ema is not None else {k: v.detach().clone()
                                                                   for k, v in self.model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs; ``model_state`` holds the weights to use (EMA when set)."""
        return {
            "model_state": self.eval_state(),
            "train": {
                "plan": self.plan, "pos": dict(self.pos), "history": self.history,
                "partial": {"sum": {k: float(v) for k, v in self.sums.items()}, "n": self.n},
                "seconds": self.seconds,
                "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
                "schedulers": {k: s.state_dict() for k, s in self.scheds.items() if s is not None},
                "opt_stage": self.opt_stage, "rng": rng_state(), "sampler": sampler_state(self.sampler),
                "raw_model_state": self.model.state_dict() if self.ema is not None else None,
                "ema": self.ema is not None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "best": self.best, "bad_epochs": self.bad_epochs, "stopped_early": self.stopped_early,
                "done": self.done,
            },
        }

    def load_state_dict(self, ck: dict[str, Any]) -> None:
        import torch

        tr = ck.get("train") or {}
        if tr.get("plan") not in (None, self.plan):
            from .errors import EngineError

            raise EngineError(f"--resume: the checkpoint was trained with stage epochs {tr.get('plan')}, "
                              f"this run asks for {self.plan} (same --epochs/--full-recipe?)")
        if tr.get("ema") and self.ema is None or not tr.get("ema") and self.ema is not None and tr:
            from .errors import EngineError

            raise EngineError("--resume: the checkpoint and this run disagree on ema_decay")
        raw = tr.get("raw_model_state")
        self.model.load_state_dict(raw if raw is not None else ck["model_state"])
        if self.ema is not None:
            self.ema.load_state_dict(ck["model_state"])
        if not tr:
            return
        self.pos = dict(tr["pos"])
        self.history = list(tr.get("history", []))
        self.seconds = float(tr.get("seconds", 0.0))
        part = tr.get("partial") or {"sum": {}, "n": 0}
        self.sums = {k: torch.tensor(v, dtype=torch.float32, device=self.device) for k, v in part["sum"].items()}
        self.n = int(part["n"])
        self._pending_opt = {"opt_stage": tr.get("opt_stage"), "optimizers": tr.get("optimizers", {}),
                             "schedulers": tr.get("schedulers", {})}
        set_rng_state(tr["rng"])
        load_sampler_state(self.sampler, tr["sampler"] if "sampler" in tr else {"rng": tr["sampler_rng"]})
        if self.scaler is not None and tr.get("scaler"):
            self.scaler.load_state_dict(tr["scaler"])
        self.best = tr.get("best")
        self.bad_epochs = int(tr.get("bad_epochs", 0))
        self.stopped_early = bool(tr.get("stopped_early", False))


def _amp_setup(amp: str | None, device):
    """``(autocast dtype or None, GradScaler or None)``; mixed precision only on CUDA."""
    if amp is None:
        return None, None
    import torch

    if amp not in ("bf16", "fp16"):
        raise ValueError(f"Recipe.amp must be 'bf16', 'fp16' or None, got {amp!r}")
    if torch.device(device).type != "cuda":
        note(f"amp={amp}: mixed precision is for CUDA; training in float32 on {torch.device(device).type}")
        return None, None
    if amp == "bf16":
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _build_optimizers(model: FusionModel, stage: Stage, recipe: Recipe, lr: float | None, epochs: int,
                      steps_per_epoch: int):
    """Returns ({name: optimizer}, {name: scheduler or None})."""
    if stage.optimizers:
        opts = {k: make_optimizer(ps, with_lr(spec, lr)) for k, (ps, spec) in stage.optimizers.items()}
        specs = {k: spec for k, (_, spec) in stage.optimizers.items()}
    else:
        params = stage.params if stage.params is not None else model.parameters()
        opts = {"main": make_optimizer(params, recipe.optim, lr)}
        specs = {"main": recipe.optim}
    scheds = {k: make_scheduler(opts[k], specs[k], epochs, steps_per_epoch) for k in opts}
    return opts, scheds


# --------------------------------------------------------------------------- the loop

def _is_cases(data) -> bool:
    return isinstance(data, (list, tuple))


def train_model(
    model: FusionModel,
    data,
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
    hooks: Sequence[Hook] = (),
    validate: Callable[[FusionModel], float] | None = None,
    num_workers: int = 0,
) -> TrainResult:
    """Train ``model`` in place and return its history.

    ``data`` is the sample source: an object with ``sample() -> (batch, target)`` (or an iterator
    of them) and, for exact resume, ``state_dict()``/``load_state_dict()`` (or a numpy ``rng``),
    seeded by the caller; or a list of training cases, for which a
    :class:`stfcat.data.PatchSampler` of the budget's patch and batch is built with ``seed``.
    ``num_workers > 0`` draws batches in DataLoader workers (:class:`WorkerBatches`).
    ``record`` (model id, config, band names, scale) is stored in every checkpoint.
    ``validate(model)`` (lower is better) runs after every epoch on the weights evaluation uses;
    the recipe's ``select="best"``/``patience`` act on it only.
    """
    import torch

    dist = dist or DistInfo()
    device = torch.device(device)
    if _is_cases(data):
        from stfcat.data.sampler import PatchSampler

        # One sampler for the whole run, seeded by the run seed (the same on every rank: each rank
        # takes its slice of the same global batch); its state goes into checkpoints.
        data = PatchSampler(list(data), budget.patch, budget.batch, seed=seed)
    sampler = WorkerBatches(data, num_workers, seed, pin_memory=device.type == "cuda") if num_workers else data
    if budget.accum_steps < 1:
        raise ValueError(f"Budget.accum_steps must be >= 1, got {budget.accum_steps}")
    model.to(device).train()
    stages = list(model.stages())
    state = TrainState(model, sampler, recipe=recipe, budget=budget, plan=stage_plan(stages, budget.epochs),
                       stages=stages, lr=lr, device=device, dist=dist)
    result = TrainResult()
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        ck = load_checkpoint(Path(checkpoint), flag="--resume")
        load_model_state(model, ck, checkpoint, (record or {}).get("model_id"))  # names the owner of a foreign one
        state.load_state_dict(ck)
        result.resumed = True
    if validate is None and (recipe.select == "best" or recipe.patience is not None):
        note("recipe selects on validation but this run has no validation data: keeping the last epoch")
    broadcast_parameters(model, dist)
    all_hooks: list[Hook] = [ProgressHook(progress and dist.is_main)]
    if checkpoint is not None:
        all_hooks.append(CheckpointHook(Path(checkpoint), record, dist))
    all_hooks += list(hooks)
    stop = state.stop
    t_start = time.perf_counter() - state.seconds
    try:
        with stop.installed():
            _loop(state, all_hooks, stop, validate, t_start)
    finally:
        if isinstance(sampler, WorkerBatches):
            sampler.close()
    if recipe.select == "best" and state.best is not None:
        target = state.ema.shadow if state.ema is not None else None
        if target is not None:
            for k, v in state.best["model_state"].items():
                target[k].copy_(v)
        else:
            model.load_state_dict(state.best["model_state"])
        result.best = {"epoch": state.best["epoch"], "score": state.best["score"]}
    state.seconds = time.perf_counter() - t_start
    for h in all_hooks:
        h.on_end(state)
    if state.ema is not None:  # evaluation uses the averaged weights (the raw ones stay in the checkpoint)
        model.load_state_dict(state.ema.shadow)
    result.history, result.seconds, result.epochs = state.history, state.seconds, state.epochs_done
    result.stopped_early = state.stopped_early
    return result


def _stop_requested(stop: StopFlag, dist: DistInfo) -> bool:
    flag = stop.requested
    if dist.enabled:
        import torch
        import torch.distributed as tdist

        t = torch.tensor([1.0 if flag else 0.0])
        tdist.all_reduce(t)
        flag = bool(t.item() > 0)
    return flag


def _interrupt(state: TrainState, hooks: Iterable[Hook], t_start: float) -> TrainingInterrupted:
    state.seconds = time.perf_counter() - t_start
    path = None
    for h in hooks:
        h.on_interrupt(state)
        if isinstance(h, CheckpointHook):
            path = h.path
    return TrainingInterrupted(path)


def _loop(state: TrainState, hooks: list[Hook], stop: StopFlag, validate, t_start: float) -> None:
    import torch

    budget, dist = state.budget, state.dist
    sl = local_slice(budget.batch, dist) if dist.enabled else None
    while not state.done:
        si = state.pos["stage"]
        stage = state.stages[si]
        if state.opt_stage != si:
            state.enter_stage(si)
        run_opts = {k: _StepOptimizer(o, dist, state.recipe.clip_grad_norm) for k, o in state.opts.items()}
        for h in hooks:
            h.on_epoch_start(state)
        while state.pos["step"] < budget.steps_per_epoch:
            if stage.loss is not None:
                logs = _plain_step(state, stage, sl)
            else:
                batch, target = _to_device(*next_batch(state.sampler), state.device, sl)
                logs = stage.step(batch, target, run_opts)
            _after_optimizer_step(state)
            for k, v in logs.items():
                v = torch.as_tensor(v, device=state.device).detach().to(torch.float32)
                state.sums[k] = state.sums[k] + v if k in state.sums else v
            state.n += 1
            state.pos["step"] += 1
            for h in hooks:
                h.on_step_end(state, logs)
            if _stop_requested(stop, dist):
                raise _interrupt(state, hooks, t_start)
        entry = _end_epoch(state, stage, validate)
        state.seconds = time.perf_counter() - t_start
        for h in hooks:
            h.on_epoch_end(state, entry)
        if not state.done and _stop_requested(stop, dist):
            raise _interrupt(state, hooks, t_start)


def _plain_step(state: TrainState, stage: Stage, sl) -> dict[str, Any]:
    """One optimiser step of a loss stage: ``accum_steps`` batches, mixed precision on CUDA when
    asked, gradients averaged over ranks, unscaled and clipped before the step."""
    import torch

    opt = state.opts["main"]
    k = state.budget.accum_steps
    opt.zero_grad(set_to_none=True)
    total = None
    for _ in range(k):
        batch, target = _to_device(*next_batch(state.sampler), state.device, sl)
        ctx = (torch.autocast(state.device.type, dtype=state.amp_dtype) if state.amp_dtype is not None
               else nullcontext())
        with ctx:
            loss = stage.loss(batch, target)
        scaled = loss / k if k > 1 else loss
        (state.scaler.scale(scaled) if state.scaler is not None else scaled).backward()
        total = loss.detach() if total is None else total + loss.detach()
    params = [p for g in opt.param_groups for p in g["params"]]
    average_gradients(params, state.dist)
    if state.scaler is not None:
        state.scaler.unscale_(opt)
    if state.recipe.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, state.recipe.clip_grad_norm)
    if state.scaler is not None:
        state.scaler.step(opt)
        state.scaler.update()
    else:
        opt.step()
    return {"loss": total / k if k > 1 else total}


def _after_optimizer_step(state: TrainState) -> None:
    for s in state.scheds.values():
        if s is not None and getattr(s, "per_step", False):
            s.step()
    if state.ema is not None:
        state.ema.update(state.model)


def _end_epoch(state: TrainState, stage: Stage, validate) -> dict[str, Any]:
    """Epoch means, epoch schedulers, validation and the next position."""
    import torch

    sums, dist = state.sums, state.dist
    if dist.enabled and sums:  # log the global batch's loss, not this rank's half
        import torch.distributed as tdist

        keys = sorted(sums)
        vec = torch.stack([sums[k] for k in keys])
        tdist.all_reduce(vec)
        sums = {k: v / dist.world_size for k, v in zip(keys, vec, strict=True)}
    means = {k: float(v) / max(state.n, 1) for k, v in sums.items()}
    si, ep = state.pos["stage"], state.pos["epoch"]
    entry: dict[str, Any] = {"stage": stage.name, "epoch": ep + 1, **means}
    for s in state.scheds.values():
        if s is None or getattr(s, "per_step", False):
            continue
        with warnings.catch_warnings():  # after a resume at an epoch's end no step ran in this process
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning)
            if s.__class__.__name__ == "ReduceLROnPlateau":
                s.step(means.get("loss", next(iter(means.values()), 0.0)))
            else:
                s.step()
    if validate is not None:
        entry["val"] = _validate(state, validate)
    state.history.append(entry)
    state.sums, state.n = {}, 0
    state.pos["epoch"], state.pos["step"] = ep + 1, 0
    if state.pos["epoch"] >= state.plan[si]:
        state.pos = {"stage": si + 1, "epoch": 0, "step": 0}
    return entry


def _validate(state: TrainState, validate) -> float:
    """Score the evaluation weights; keep the best ones (``select="best"``) and count epochs
    without improvement (``patience``)."""
    import torch

    model = state.model
    raw = None
    if state.ema is not None:  # score the weights that evaluation will use
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(state.ema.shadow)
    model.eval()
    with torch.no_grad():
        score = float(validate(model))
    model.train()
    if raw is not None:
        model.load_state_dict(raw)
    epoch = len(state.history) + 1
    if state.best is None or score < state.best["score"]:
        keep = state.eval_state() if state.recipe.select == "best" else None
        state.best = {"score": score, "epoch": epoch, "model_state": keep}
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
        if state.recipe.patience is not None and state.bad_epochs >= state.recipe.patience:
            state.stopped_early = True
    return score
