"""Repeated seeds: one configuration trained once per seed, grouped in MLflow.

``run_seeds(cfg, seeds)`` opens a parent MLflow run (``recboard.kind = group``) and trains one
nested run per seed (``recboard.kind = run``, ``recboard.group = <parent run id>``,
``recboard.seed``). The parent records the mean of every ``test/*`` and ``best_valid/*``
metric and their standard deviation (``test_std/*``). The leaderboard shows a group as
``mean ± std (n)`` and compares groups by their mean validation metric, never by their
luckiest seed. Standard deviations are sample standard deviations (ddof = 1), the spread a
new seed is expected to have; a group of one seed has none.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from recboard.benchmarks.evaluation.significance import mean_and_std
from recboard.benchmarks.tracking.store import STILL_IMPROVING_TAG
from recboard.errors import UsageError


class SeedsError(UsageError):
    pass


def parse_seeds(text: str) -> list[int]:
    """"1,2,3" -> [1, 2, 3]; a one-line error for anything else (and for repeats)."""
    try:
        seeds = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise SeedsError(f"--seeds expects comma-separated integers such as 1,2,3, got {text!r}") from None
    if not seeds:
        raise SeedsError(f"--seeds expects at least one integer, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise SeedsError(f"--seeds lists a seed twice: {text!r}")
    return seeds


def summarize(results: list, key: str) -> tuple[dict, dict]:
    """(mean, std) per metric over ``getattr(result, key)`` of every seed's result."""
    names = getattr(results[0], key).keys()
    stats = {name: mean_and_std([getattr(r, key)[name] for r in results]) for name in names}
    return {n: m for n, (m, _) in stats.items()}, {n: s for n, (_, s) in stats.items()}


@dataclass
class GroupResult:
    model: str
    dataset: str
    protocol: str
    seeds: list
    metrics: dict          # test metrics, mean over seeds
    metrics_std: dict
    valid_metrics: dict    # best validation metrics, mean over seeds
    runs: list             # [{"seed", "run_id", "metrics", "valid_metrics", "best_epoch", "train_time_s",
                           #   "still_improving"}]
    group_run_id: str | None
    still_improving: bool = False   # any seed's training ended while still improving

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def run_seeds(cfg, seeds: list, *, data=None, data_dir=None, cache_dir=None, tracking: bool = True,
              progress: bool = False, run_name: str | None = None, extra_tags: dict | None = None) -> GroupResult:
    """Train ``cfg`` once per seed (``cfg.train.seed`` replaced); see the module docstring."""
    from recboard.benchmarks.training import runner
    from recboard.datasets.registry import load_dataset

    data = data if data is not None else load_dataset(cfg.dataset_name, data_dir=data_dir, cache_dir=cache_dir)
    from recboard.benchmarks.distributed import is_main
    # under torchrun only rank 0 records, as for a single run
    parent = open_group(cfg, seeds, data, run_name, extra_tags) if (tracking and is_main()) else None
    results = []
    with runner.ending_status(parent) if parent else contextlib.nullcontext():
        for seed in seeds:
            seeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed),
                                         model=dataclasses.replace(cfg.model), sources={**cfg.sources})
            tags = {**(extra_tags or {}), "recboard.seed": str(seed)}
            if parent:
                tags["recboard.group"] = parent.run_id
            results.append(runner.run(seeded, data=data, tracking=tracking, nested=True, progress=progress,
                                      run_name=f"{cfg.model_name}@{cfg.dataset_name} seed {seed}", extra_tags=tags))
        group = group_result(cfg, seeds, results, parent.run_id if parent else None)
        if parent:
            close_group(parent, group)
    return group


def close_group(parent, group: GroupResult) -> None:
    """Log the group's means and standard deviations on its parent run."""
    parent.log_metrics({**{f"test/{k}": v for k, v in group.metrics.items()},
                        **{f"test_std/{k}": v for k, v in group.metrics_std.items()},
                        **{f"best_valid/{k}": v for k, v in group.valid_metrics.items()},
                        "n_seeds": len(group.seeds)})
    parent.set_tags({STILL_IMPROVING_TAG: str(group.still_improving).lower()})


def open_group(cfg, seeds, data, run_name, extra_tags):
    from recboard.benchmarks.tracking import store as T
    from recboard.benchmarks.training.runner import data_tags
    from recboard.datasets.registry import dataset_spec

    tags = T.run_tags(kind="group", model=cfg.model_name, dataset=cfg.dataset_name,
                      task=dataset_spec(cfg.dataset_name).task, protocol=cfg.train.protocol,
                      metric=cfg.train.metric, seeds=",".join(map(str, seeds)), **data_tags(data))
    tags.update(extra_tags or {})
    return T.Tracker(run_name or f"{cfg.model_name}@{cfg.dataset_name} x{len(seeds)} seeds", tags,
                     group_params(cfg))


def group_params(cfg) -> dict:
    """The params of a group's parent run: the resolved config without the seed, which
    each seed's own run records."""
    return {k: v for k, v in cfg.flat().items() if k != "seed"}


def group_result(cfg, seeds, results, group_run_id) -> GroupResult:
    metrics, metrics_std = summarize(results, "test_metrics")
    valid, _ = summarize(results, "valid_metrics")
    runs = [{"seed": seed, "run_id": r.mlflow_run_id, "metrics": r.test_metrics, "valid_metrics": r.valid_metrics,
             "best_epoch": r.best_epoch, "train_time_s": r.train_time_s, "still_improving": r.still_improving}
            for seed, r in zip(seeds, results)]
    return GroupResult(cfg.model_name, cfg.dataset_name, cfg.train.protocol, list(seeds), metrics, metrics_std,
                       valid, runs, group_run_id, any(r.still_improving for r in results))
