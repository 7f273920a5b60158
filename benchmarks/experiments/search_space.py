"""The search space of ``bench tune`` and how it is searched.

The space: the model module's ``SEARCH_SPACE`` ({key: ("float", lo, hi) | ("logfloat", lo,
hi) | ("int", lo, hi) | ("categorical", [..])}), overridden per key with ``--space
key=low:high`` (``key=low:high:log`` for a log scale) or ``--space key=a,b,c``. Keys fixed
with ``--set`` leave the default space. Every entry is checked against the config field it
sets, and a bad one is a ``TuningError`` naming the key and what was expected.

The search: ``--sampler`` (``SAMPLERS``) and ``--pruner`` (``PRUNERS``), built by
``make_sampler`` / ``make_pruner``.
"""
from __future__ import annotations

from recboard.errors import UsageError

KINDS = ("float", "logfloat", "int", "categorical")
SAMPLERS = {"tpe": "TPE (Bayesian, the default)", "random": "uniform random",
            "qmc": "quasi-random Sobol points (even coverage)", "gp": "Gaussian process (few, costly trials)",
            "cmaes": "CMA-ES (continuous keys; needs the cmaes package)"}
PRUNERS = {"median": "stop a trial below the median of earlier trials at the same epoch (the default)",
           "hyperband": "Hyperband over epochs", "successive-halving": "asynchronous successive halving",
           "none": "never stop a trial early"}


class TuningError(UsageError):
    pass


def default_space(model: str) -> dict:
    """The model's ``SEARCH_SPACE``; a clear error for models without one (random, pop)."""
    from recboard.models.registry import MODELS, model_module, model_spec

    space = getattr(model_module(model), "SEARCH_SPACE", None)
    if not space:
        tunable = []
        for name in MODELS:
            try:
                if getattr(model_module(name), "SEARCH_SPACE", None):
                    tunable.append(name)
            except ImportError:
                continue
        raise TuningError(f"model {model!r} has no hyper-parameters to tune ({model_spec(model).module} defines "
                          f"no SEARCH_SPACE); models with a search space: {', '.join(tunable)}")
    return dict(space)


def check_space(space: dict, valid_keys, source: str) -> dict:
    """Validate {key: (kind, ...)} entries; returns a normalised copy."""
    out = {}
    for key, spec in space.items():
        if key not in valid_keys:
            raise TuningError(f"{source}: unknown config key {key!r}; valid keys: {', '.join(sorted(valid_keys))}")
        if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in KINDS:
            raise TuningError(f"{source}: {key!r} must be (kind, ...) with kind one of {', '.join(KINDS)}, got {spec!r}")
        kind = spec[0]
        if kind == "categorical":
            if len(spec) != 2 or not isinstance(spec[1], (list, tuple)) or not spec[1]:
                raise TuningError(f"{source}: {key!r} categorical needs a non-empty list of choices, got {spec!r}")
            out[key] = ("categorical", list(spec[1]))
            continue
        if len(spec) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec[1:]):
            raise TuningError(f"{source}: {key!r} {kind} needs numeric (low, high), got {spec!r}")
        low, high = spec[1], spec[2]
        if not low < high:
            raise TuningError(f"{source}: {key!r} needs low < high, got {low} and {high}")
        if kind == "logfloat" and low <= 0:
            raise TuningError(f"{source}: {key!r} logfloat needs low > 0, got {low}")
        if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
            raise TuningError(f"{source}: {key!r} int needs integer bounds, got {low} and {high}")
        out[key] = (kind, int(low), int(high)) if kind == "int" else (kind, float(low), float(high))
    return out


def parse_space(overrides, key_types: dict, base: dict | None = None) -> dict:
    """``["lr=1e-4:1e-2:log", "hidden_size=64,128"]`` -> space entries, typed by the config
    field each key belongs to (``key_types``: key -> Python type)."""
    from recboard.benchmarks.config import ConfigError, coerce

    base = base or {}
    out = {}
    for text in overrides or []:
        if "=" not in text:
            raise TuningError(f"--space expects key=low:high or key=a,b,c, got {text!r}")
        key, value = (part.strip() for part in text.split("=", 1))
        if key not in key_types:
            raise TuningError(f"--space {text!r}: unknown config key {key!r}; valid keys: "
                              f"{', '.join(sorted(key_types))}")
        typ = key_types[key]
        try:
            if ":" in value:
                parts = value.split(":")
                log = len(parts) == 3 and parts[2].strip().lower() == "log"
                if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
                    raise TuningError(f"--space {text!r}: a range is low:high or low:high:log")
                if typ is int:
                    if log:
                        raise TuningError(f"--space {text!r}: log scale is for float keys; {key!r} is an int")
                    out[key] = ("int", coerce(key, parts[0], int), coerce(key, parts[1], int))
                elif typ is float:
                    log = log or (base.get(key, ("",))[0] == "logfloat")
                    out[key] = ("logfloat" if log else "float", coerce(key, parts[0], float),
                                coerce(key, parts[1], float))
                else:
                    raise TuningError(f"--space {text!r}: {key!r} is a {getattr(typ, '__name__', typ)}; "
                                      f"give choices, e.g. {key}=a,b")
            elif "," in value:
                out[key] = ("categorical", [coerce(key, v.strip(), typ) for v in value.split(",") if v.strip()])
            else:
                raise TuningError(f"--space {text!r}: one value is not a range; use --set {key}={value} to fix "
                                  f"it, or give key=low:high / key=a,b,c")
        except ConfigError as err:
            raise TuningError(f"--space {text!r}: {err}") from None
    return check_space(out, key_types, "--space")


def suggest(trial, space: dict) -> dict:
    params = {}
    for key, spec in space.items():
        kind = spec[0]
        if kind == "categorical":
            params[key] = trial.suggest_categorical(key, spec[1])
        elif kind == "int":
            params[key] = trial.suggest_int(key, spec[1], spec[2])
        else:
            params[key] = trial.suggest_float(key, spec[1], spec[2], log=kind == "logfloat")
    return params


def config_key_types(cfg) -> dict:
    """Every settable config key -> its (non-Optional) Python type."""
    import typing

    from recboard.benchmarks.config import field_types

    out = {}
    for obj in (cfg.train, cfg.model):
        for key, typ in field_types(obj).items():
            if typing.get_origin(typ) is typing.Union:
                typ = next(a for a in typing.get_args(typ) if a is not type(None))
            out[key] = typ
    return out


def resolve_search(model: str, dataset: str, space=None, sets=None):
    """(config with the fixed values, fixed values, search space): the model's SEARCH_SPACE
    minus keys fixed by ``sets``, plus the ``space`` overrides."""
    from recboard.benchmarks import config as C

    fixed = C.as_updates(sets)
    base_cfg = C.resolve(model, dataset, fixed)           # checks model, dataset and --set
    key_types = config_key_types(base_cfg)
    search = {k: v for k, v in check_space(default_space(model), key_types,
                                           f"SEARCH_SPACE of {model}").items() if k not in fixed}
    if isinstance(space, dict):
        overrides = check_space(space, key_types, "space")
    else:
        overrides = parse_space(space, key_types, search)
    clash = sorted(set(overrides) & set(fixed))
    if clash:
        raise TuningError(f"{', '.join(clash)} both fixed with --set and searched with --space; pick one")
    return base_cfg, fixed, {**search, **overrides}


def make_sampler(name: str, seed: int, n_trials_so_far: int = 0):
    """The Optuna sampler ``name`` (``SAMPLERS``). Seeds are offset by the trials a resumed
    study already holds, so it does not replay the first run's random suggestions; QMC keeps
    its seed, because it continues its one sequence from the count kept in the storage."""
    import optuna

    S = optuna.samplers
    if name not in SAMPLERS:
        raise TuningError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    if name == "cmaes":
        import importlib.util
        if importlib.util.find_spec("cmaes") is None:
            raise TuningError("--sampler cmaes needs the cmaes package: pip install cmaes")
    import warnings

    with warnings.catch_warnings():  # QMC and GP are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "qmc":
            return S.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
        build = {"tpe": S.TPESampler, "random": S.RandomSampler, "gp": S.GPSampler,
                 "cmaes": lambda seed: S.CmaEsSampler(seed=seed, warn_independent_sampling=False)}[name]
        return build(seed=seed + n_trials_so_far)


def make_pruner(name, epochs: int):
    """The Optuna pruner ``name`` (``PRUNERS``; None: the default, median); an Optuna pruner
    object passes through. Trials report the validation metric once per epoch, so ``epochs``
    is Hyperband's budget."""
    import optuna

    P = optuna.pruners
    if name is not None and not isinstance(name, str):
        return name
    name = name or "median"
    builders = {"median": lambda: P.MedianPruner(n_startup_trials=5, n_warmup_steps=3),
                "hyperband": lambda: P.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1)),
                "successive-halving": lambda: P.SuccessiveHalvingPruner(min_resource=1),
                "none": P.NopPruner}
    if name not in builders:
        raise TuningError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")
    return builders[name]()
