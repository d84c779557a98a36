"""Hooks of the training loop: checkpointing, progress, and the base class for callers' own
(logging, stopping, ...). A hook sees the loop's :class:`~stfcat.engine.train.TrainState`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import save_checkpoint
from .distributed import DistInfo

if TYPE_CHECKING:
    from .train import TrainState


class Hook:
    """Callbacks of the loop; override what you need. ``loop`` is the :class:`TrainState`;
    ``loop.request_stop()`` stops the run as an interruption would (checkpoint, then
    :class:`TrainingInterrupted`)."""

    def on_epoch_start(self, loop: TrainState) -> None: ...
    def on_step_end(self, loop: TrainState, logs: dict[str, Any]) -> None: ...
    def on_epoch_end(self, loop: TrainState, entry: dict[str, Any]) -> None: ...
    def on_interrupt(self, loop: TrainState) -> None: ...
    def on_end(self, loop: TrainState) -> None: ...


class CheckpointHook(Hook):
    """Writes the state (atomically) after every epoch, on interruption and at the end (rank 0)."""

    def __init__(self, path: Path, record: dict[str, Any] | None, dist: DistInfo) -> None:
        self.path, self.record, self.dist = Path(path), dict(record or {}), dist

    def save(self, loop: TrainState) -> None:
        if self.dist.is_main:
            save_checkpoint(self.path, {**self.record, **loop.state_dict()})

    on_interrupt = save

    def on_epoch_end(self, loop, entry):
        self.save(loop)

    def on_end(self, loop):
        self.save(loop)


class ProgressHook(Hook):
    """A tqdm bar per epoch and one line per finished epoch (rank 0)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar, self.of = enabled, None, 0

    def on_epoch_start(self, loop):
        if self.enabled:
            from tqdm.auto import tqdm

            st = loop.stages[loop.pos["stage"]]
            self.of = loop.plan[loop.pos["stage"]]
            self.bar = tqdm(total=loop.budget.steps_per_epoch, initial=loop.pos["step"], leave=False, unit="step",
                            desc=f"{st.name} epoch {loop.pos['epoch'] + 1}/{self.of}")

    def on_step_end(self, loop, logs):
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, loop, entry):
        if self.bar is not None:
            from tqdm.auto import tqdm

            self.close(loop)
            shown = ", ".join(f"{k} {v:.5g}" for k, v in entry.items() if k not in ("stage", "epoch"))
            tqdm.write(f"[{entry['stage']}] epoch {entry['epoch']}/{self.of}: {shown}")

    def close(self, loop) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    on_interrupt = on_end = close
