"""Run configuration: typed dataclass defaults -> task defaults -> model presets -> --set.

One flat key namespace for the user (``--set lr=3e-4 --set mask_ratio=0.4``) routed to
either the trainer's ``TrainConfig`` or the model's own config dataclass. Unknown keys and
values of the wrong type are errors that name the key and the expected type.
"""
from __future__ import annotations

import dataclasses
import re
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any
from recboard.benchmarks.evaluation.protocols import IMPRESSION_METRICS, SEQUENCE_METRICS, SEQUENCE_PROTOCOLS
from recboard.errors import UsageError


class ConfigError(UsageError):
    pass


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_len: int = 50             # sequence length fed to sequence models (model config may override)
    history_len: int = 50         # clicked news per user for impression models
    npratio: int = 4              # sampled negatives per click (impression training)
    protocol: str = "full"        # full | sampled-uni100 | sampled-pop100 (sequence data)
    metric: str = "NDCG@10"       # validation metric for early stopping and model selection
    patience: int = 5             # epochs without improvement before stopping (0 = never stop early)
    seed: int = 42
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    amp: bool = True              # bf16 autocast on CUDA
    eval_batch_size: int = 512
    max_steps_per_epoch: int = 0  # 0 = the whole training set each epoch
    max_train_minutes: float = 0  # stop starting epochs after this much training time (0 = no limit)
    grad_clip: float = 5.0
    save_model: bool = True       # log the best weights as an MLflow artifact (bench eval re-scores them)
    compile: str = "off"          # torch.compile the training loss: off | default | reduce-overhead | max-autotune
    lr_schedule: str = "constant"  # constant | linear: BERT's warmup, then linear decay to 0 at the last step
    warmup_steps: int = 0         # steps of linear warmup from lr 0 (either schedule)
    window_step: int = 0          # sequence training windows start every window_step items (0 = max_len: no overlap)


# torch.compile modes; "reduce-overhead" adds CUDA graphs (one launch per compiled graph on a GPU)
# study, sweep and record names become folder and file names
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
LR_SCHEDULES = ("constant", "linear")

# Per-task defaults applied before the model's own presets.
TASK_PRESETS = {
    "sequence": {"metric": "NDCG@10"},
    "impression": {"metric": "AUC", "protocol": "impressions"},
}


@dataclass
class RunConfig:
    model_name: str
    dataset_name: str
    train: TrainConfig
    model: Any
    sources: dict = field(default_factory=dict)   # key -> where its value came from

    def flat(self) -> dict:
        out = dataclasses.asdict(self.train)
        out.update(dataclasses.asdict(self.model))
        return out

    def get(self, key: str):
        target = self.model if key in field_types(self.model) else self.train
        return getattr(target, key)

    @property
    def max_len(self) -> int:
        return int(getattr(self.model, "max_len", self.train.max_len))


def field_types(obj_or_cls) -> dict:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(key: str, value: Any, typ) -> Any:
    """Convert ``value`` (a string from the command line, or a Python value) to ``typ``."""
    # Optional[float] and PEP 604's ``float | None`` (what the model configs write) are two types
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        typ = next(a for a in typing.get_args(typ) if a is not type(None))
    if typ not in (bool, int, float, str):
        return value
    if typ is str:
        return str(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
    elif not isinstance(value, bool):
        try:
            if typ is float:
                return float(value)
            if isinstance(value, float):  # an int key accepts 3.0 but not 3.5
                if value.is_integer():
                    return int(value)
            else:
                return int(value)
        except (TypeError, ValueError):
            pass
    raise ConfigError(f"config key {key!r} expects {typ.__name__}, got {value!r}")


def apply(run: RunConfig, updates: dict, source: str) -> None:
    model_types = field_types(run.model)
    train_types = field_types(run.train)
    for key, value in updates.items():
        if key in model_types:
            setattr(run.model, key, coerce(key, value, model_types[key]))
        elif key in train_types:
            setattr(run.train, key, coerce(key, value, train_types[key]))
        else:
            valid = sorted(set(model_types) | set(train_types))
            hint = difflib.get_close_matches(key, valid, n=1)
            raise ConfigError(f"unknown config key {key!r} (from {source})"
                              + (f"; did you mean {hint[0]!r}?" if hint else "")
                              + f"; valid keys: {', '.join(valid)}")
        run.sources[key] = source


def as_updates(sets) -> dict:
    """Config updates from ``--set`` strings (a list of key=value) or a dict of them."""
    return parse_sets(sets) if isinstance(sets, (list, tuple)) else dict(sets or {})


def parse_sets(pairs: list) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def resolve(model_name: str, dataset_name: str, sets: list | dict | None = None,
            preset: str = "default", layers: list | None = None) -> RunConfig:
    """Build the run configuration: dataclass defaults -> task preset -> the registry
    name's overrides -> the model's ``PRESETS`` -> the registry name's own recipe
    (``ModelSpec.preset``: gru4rec_plus trains on ``NAMED_PRESETS["plus"]``), if any -> the
    named ``preset`` (``NAMED_PRESETS[preset]``), if any -> ``sets``.
    Presets are keyed by "*", the dataset's family (e.g. "mind"), then the dataset itself,
    applied in that order. ``layers``: [(values, source)] applied after the presets and
    before ``sets`` (``bench run --config`` / ``--from-run`` / ``--from-study``)."""
    from recboard.datasets.registry import dataset_spec
    from recboard.models.registry import model_class, model_presets, model_spec

    spec, dataset = model_spec(model_name), dataset_spec(dataset_name)
    run = RunConfig(model_name, dataset_name, TrainConfig(), model_class(model_name).config_class())
    apply(run, TASK_PRESETS[dataset.task], f"{dataset.task} defaults")
    apply(run, spec.overrides, f"model {model_name}")
    presets = model_presets(model_name)
    if preset not in presets:
        raise ConfigError(f"model {model_name!r} has no preset {preset!r}; its presets: {', '.join(presets)}")
    # a named preset is a recipe on top of the defaults, not a replacement for them
    for name in dict.fromkeys(("default", spec.preset or "default", preset)):
        for key in dict.fromkeys(("*", dataset.family, dataset_name)):
            if key and key in presets[name]:
                apply(run, presets[name][key], f"preset {model_name}/{key}" + ("" if name == "default" else f" ({name})"))
    for values, source in layers or []:   # a replayed run or config file, a tuned study
        apply(run, values, source)
    apply(run, as_updates(sets), "--set")
    validate(run, dataset.task)
    check_model_config(run)
    return run


def check_model_config(run: RunConfig) -> None:
    """The model config's own ``check()`` (plug-ins may have none): a value out of its range
    is a usage error here, before any data is read or any run starts."""
    check = getattr(run.model, "check", None)
    if callable(check):
        try:
            check()
        except ValueError as err:
            raise ConfigError(str(err)) from None


def validate(run: RunConfig, task: str) -> None:
    t = run.train
    if task == "sequence":
        if t.protocol not in SEQUENCE_PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(SEQUENCE_PROTOCOLS)}, got {t.protocol!r}")
        metrics = SEQUENCE_METRICS
    else:
        metrics = IMPRESSION_METRICS
    if t.metric not in metrics:
        raise ConfigError(f"metric for {task} data must be one of {', '.join(metrics)}, got {t.metric!r}")
    for key, choices in (("compile", COMPILE_MODES), ("lr_schedule", LR_SCHEDULES)):
        if getattr(t, key) not in choices:
            raise ConfigError(f"config key {key!r} must be one of {', '.join(choices)}, got {getattr(t, key)!r}")
    for key in ("epochs", "batch_size", "eval_batch_size", "max_len", "history_len", "npratio", "warmup_steps",
                "window_step"):
        least = 0 if key in ("epochs", "warmup_steps", "window_step") else 1
        if getattr(t, key) < least:
            raise ConfigError(f"config key {key!r} must be {'>= 0' if least == 0 else 'positive'}, got {getattr(t, key)}")


# --------------------------------------------------------------------------- replay

def from_file(path) -> dict:
    """Model, dataset, preset and config keys from a TOML or JSON file. Flat keys, a
    ``[config]`` table, or a run's ``config.json`` / ``model/config.json`` artifact."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--config {path}: cannot read it ({err.strerror})") from None
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:   # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as err:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise ConfigError(f"--config {path}: not valid {kind} ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a table of keys, got {type(data).__name__}")
    nested = data.get("config")
    flat = {k: v for k, v in data.items() if k not in ("config", "sources", "dataset_stats", "identity")}
    return {**flat, **(nested if isinstance(nested, dict) else {})}


def from_run(run_id: str) -> dict:
    """Model, dataset and the whole resolved config of a recorded run (its config.json)."""
    import json

    from recboard.benchmarks.tracking.store import artifact, get_run

    tags = get_run(run_id).data.tags
    with artifact(run_id, "config.json") as path:
        if path is None:
            raise ConfigError(f"run {run_id} has no config.json artifact to replay")
        config = json.loads(path.read_text()).get("config", {})
    return {"model": tags.get("recboard.model"), "dataset": tags.get("recboard.dataset"), **config}


def describe(run: RunConfig) -> str:
    """The values that differ from the dataclass defaults, grouped by where they came from:
    printed before a run so its log says exactly what was trained."""
    by_source: dict = {}
    flat = run.flat()
    for key, value in flat.items():   # in the config dataclasses' order
        if key in run.sources:
            by_source.setdefault(run.sources[key], []).append(f"{key}={value}")
    lines = [f"recboard: {run.model_name} on {run.dataset_name}, config (defaults not listed):"]
    lines += [f"  {source}: {', '.join(keys)}" for source, keys in by_source.items()]
    return "\n".join(lines)
