"""Run configurations: the fully resolved description of one ``stfcat run``.

Every run writes its :class:`RunConfig` as ``config.yaml`` in its folder. ``stfcat run --config
FILE`` starts from such a file, ``--set key=value`` changes any field (``--set optim.lr=2e-4
--set budget.epochs=40``; values are YAML scalars), and the usual flags (``--epochs``, ``--lr``,
...) are shortcuts for fields. Same config, same seed, same machine: same metrics.

Sections: ``model`` (id, constructor ``args`` besides bands and ratio), ``data`` (dataset, the
evaluated split, and the bands/ratio/split dates it had, checked when a config is replayed),
``optim`` (the recipe's optimiser and schedule), ``budget``, ``training`` (clipping, EMA, mixed
precision, validation selection, loader workers), and ``lr`` (the ``--lr`` flag: one learning
rate for every optimiser of every stage), ``seed``, ``device``, ``tile``. Non-trainable models
have no ``optim``, ``budget`` or ``training``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import EngineError

CONFIG_NAME = "config.yaml"
_FREE = {"model.args", "optim.scheduler_args"}  # dict fields whose keys are not fixed by the schema


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    id: str
    args: dict[str, Any] = Field(default_factory=dict)


class DataSection(_Section):
    dataset: str = "demo"
    split: str = "test"
    split_kind: str | None = None  # the task's split kind (fusion: temporal/spatial); None: the task's default
    bands: list[str] | None = None  # facts of the data the run saw (checked on replay)
    ratio: int | None = None
    dates: dict[str, list[str | int]] | None = None  # split dates (fusion) or index ranges (time series)


class OptimSection(_Section):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: Literal["none", "step", "plateau", "cosine", "exponential"] = "none"
    scheduler_args: dict[str, Any] = Field(default_factory=dict)
    schedule_unit: Literal["epoch", "step"] = "epoch"
    warmup_steps: int = Field(0, ge=0)


class BudgetSection(_Section):
    which: Literal["quick", "paper"] = "quick"
    epochs: int = Field(ge=1)
    patch: int = Field(ge=1)  # fine pixels (fusion); tasks without patches keep 1
    batch: int = Field(ge=1)
    steps_per_epoch: int = Field(50, ge=1)
    accum_steps: int = Field(1, ge=1)


class TrainingSection(_Section):
    clip_grad_norm: float | None = Field(None, gt=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    amp: Literal["bf16", "fp16"] | None = None
    select: Literal["last", "best"] = "last"
    patience: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)


class RunConfig(_Section):
    version: Literal[1] = 1
    model: ModelSection
    data: DataSection = Field(default_factory=DataSection)
    optim: OptimSection | None = None
    budget: BudgetSection | None = None
    training: TrainingSection | None = None
    lr: float | None = Field(None, gt=0)
    seed: int = 0
    device: str = "auto"
    tile: int = Field(256, ge=16)


# --------------------------------------------------------------------------- building

def _model_info(model_id: str):
    from stfcat.models import RegistryError, UnknownModelError, model_info

    try:
        return model_info(model_id)
    except (UnknownModelError, RegistryError) as exc:  # RegistryError: a model module did not import
        raise EngineError(str(exc)) from None


def _budget_section(recipe, which: str) -> BudgetSection:
    b = recipe.paper if which == "paper" else recipe.quick
    return BudgetSection(which=which, **{f.name: getattr(b, f.name) for f in fields(b)})


def default_config(model_id: str, dataset: str = "demo", *, full_recipe: bool = False) -> RunConfig:
    """The config of ``stfcat run MODEL --dataset DATASET`` before flags: the recipe's values."""
    info = _model_info(model_id)
    cfg = RunConfig(model=ModelSection(id=info.id), data=DataSection(dataset=str(dataset)))
    if info.trainable and info.recipe is not None:
        r = info.recipe
        optim, args = r.for_budget(full_recipe)  # the quick budget may start differently (recorded)
        cfg.model.args = args
        cfg.optim = OptimSection(**asdict(optim))
        cfg.budget = _budget_section(r, "paper" if full_recipe else "quick")
        cfg.training = TrainingSection(**{k: getattr(r, k) for k in TrainingSection.model_fields if hasattr(r, k)})
    return cfg


def build_config(model_id: str | None = None, config_file: Path | None = None, *, dataset: str | None = None,
                 full_recipe: bool = False, epochs: int | None = None, patch: int | None = None,
                 batch: int | None = None, steps_per_epoch: int | None = None, lr: float | None = None,
                 seed: int | None = None, device: str | None = None, tile: int | None = None,
                 num_workers: int | None = None, overrides: dict[str, Any] | None = None,
                 sets: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The config of a run: ``config_file`` (or the model's recipe), then the flags that were
    given (``None`` = not given), then ``--set`` items, in that order."""
    if config_file is not None:
        cfg = load_config(Path(config_file))
        if model_id is not None and _model_info(model_id).id != cfg.model.id:
            raise EngineError(f"MODEL {model_id!r} differs from model.id {cfg.model.id!r} of {config_file} "
                              f"(leave MODEL out, or --set model.id={model_id})")
        if dataset is not None:
            cfg.data = DataSection(dataset=str(dataset))
        if full_recipe and cfg.budget is not None:  # the paper's budget, optimiser and model
            recipe = _model_info(cfg.model.id).recipe
            quick_args = recipe.for_budget(False)[1]
            cfg.budget = _budget_section(recipe, "paper")
            cfg.optim = OptimSection(**asdict(recipe.optim))
            cfg.model.args = {k: v for k, v in cfg.model.args.items()
                              if k not in quick_args or v != quick_args[k]}
    elif model_id is None:
        raise EngineError("give a MODEL id or --config FILE (a run folder's config.yaml)")
    else:
        cfg = default_config(model_id, dataset or "demo", full_recipe=full_recipe)
    if overrides:
        cfg.model.args = {**cfg.model.args, **overrides}
    if cfg.budget is not None:  # as before, budget flags mean nothing to non-trainable models
        for name, v in (("epochs", epochs), ("patch", patch), ("batch", batch), ("steps_per_epoch", steps_per_epoch)):
            if v is not None:
                setattr(cfg.budget, name, v)
    if cfg.training is not None and num_workers is not None:
        cfg.training.num_workers = num_workers
    for name, v in (("lr", lr), ("seed", seed), ("device", device), ("tile", tile)):
        if v is not None:
            setattr(cfg, name, v)
    return apply_sets(cfg, sets) if sets else cfg


# --------------------------------------------------------------------------- --set

def known_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every settable dotted key of the schema."""
    out = []
    for name, f in model.model_fields.items():
        key = prefix + name
        sub = _section_type(f.annotation)
        if sub is not None:
            out += known_keys(sub, key + ".")
        else:
            out.append(key)
    return out


def _section_type(annotation) -> type[BaseModel] | None:
    for t in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_value(raw: str) -> Any:
    """A YAML scalar (``2e-4`` is a number here, unlike YAML 1.1)."""
    import yaml

    text = raw.strip()
    if _NUMBER.match(text):
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text


def _unknown(key: str, why: str = "unknown key") -> EngineError:
    close = difflib.get_close_matches(key, known_keys(), n=3, cutoff=0.6)
    if not close:  # a wrong last part: suggest the fields of the same section
        head = key.rsplit(".", 1)[0] + "." if "." in key else ""
        close = [k for k in known_keys() if head and k.startswith(head)][:6]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return EngineError(f"--set {key}: {why}{hint}")


def apply_sets(cfg: RunConfig, sets: list[str] | tuple[str, ...]) -> RunConfig:
    """``key=value`` items applied to ``cfg`` (a new config), with one-line errors naming the key."""
    data = cfg.model_dump()
    keys = set(known_keys())
    for item in sets:
        if "=" not in item:
            raise EngineError(f"--set {item!r}: write key=value, e.g. --set optim.lr=2e-4")
        key, raw = (s.strip() for s in item.split("=", 1))
        parts = key.split(".")
        free = next((f for f in _FREE if key.startswith(f + ".")), None)
        if key not in keys and free is None:
            raise _unknown(key)
        node = data
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                where = ".".join(parts[: i + 1])
                if where in ("optim", "budget", "training"):
                    raise EngineError(f"--set {key}: model {cfg.model.id!r} is not trainable; it has no {where}")
                node[part] = {}
            node = node[part]
        node[parts[-1]] = parse_value(raw)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise EngineError("--set: " + explain(exc)) from None


def explain(exc: ValidationError) -> str:
    """The first problem of a validation error as ``key: message (got value)``."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, known_keys(), n=3, cutoff=0.6)
        return f"{key}: unknown key" + (f" (did you mean {', '.join(close)}?)" if close else "")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{key}: {err['msg']} (got {err.get('input')!r}){more}"


# --------------------------------------------------------------------------- files

def load_config(path: Path) -> RunConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise EngineError(f"--config {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise EngineError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise EngineError(f"--config {path}: expected a mapping of sections (model, data, optim, budget, ...)")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise EngineError(f"--config {path}: {explain(exc)}") from None


def write_config(path: Path, cfg: RunConfig) -> Path:
    """``config.yaml`` written atomically (temporary file, then moved into place)."""
    import yaml

    from .outputs import atomic_write_text

    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
    return atomic_write_text(Path(path), "# stfcat run configuration: replay with `stfcat run --config <this file>`\n"
                             + text)


# --------------------------------------------------------------------------- using a config

def resolve(cfg: RunConfig, series, device) -> RunConfig:
    """The config as run: the patch clipped to the scene, the device that was picked, the data's
    bands, ratio and split dates (a replayed config whose data differ is refused)."""
    cfg = cfg.model_copy(deep=True)
    facts: dict[str, Any] = {}  # what the task's data object has of these (fusion: all three)
    if getattr(series, "bands", None) is not None:
        facts["bands"] = list(series.bands)
    if getattr(series, "ratio", None) is not None:
        facts["ratio"] = int(series.ratio)
    if getattr(series, "split", None) is not None:
        facts["dates"] = {k: list(v) for k, v in series.split.items()}
    for name, value in facts.items():
        old = getattr(cfg.data, name)
        if old is not None and old != value:
            raise EngineError(f"config data.{name} is {old!r} but dataset {cfg.data.dataset!r} has {value!r}: "
                              "not the data this config was run on")
        setattr(cfg.data, name, value)
    if cfg.budget is not None and getattr(series, "shape", None) is not None:
        cfg.budget.patch = min(cfg.budget.patch, *series.shape)
    cfg.device = str(device)
    return cfg


def recipe_and_budget(cfg: RunConfig, recipe):
    """The model's :class:`Recipe` with the config's optimiser and training fields, and its Budget."""
    from stfcat.models.base import Budget, OptimSpec

    if cfg.optim is None or cfg.budget is None:
        raise EngineError(f"config: model {cfg.model.id!r} is trainable; the config needs optim and budget")
    optim = OptimSpec(**{**cfg.optim.model_dump(), "betas": tuple(cfg.optim.betas)})
    b = cfg.budget.model_dump()
    b.pop("which")
    extra = cfg.training.model_dump() if cfg.training is not None else {}
    extra.pop("num_workers", None)
    return replace(recipe, optim=optim, **extra), Budget(**b)
