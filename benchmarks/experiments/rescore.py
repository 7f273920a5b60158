"""``bench eval``: re-score a finished run's saved best weights on the test split under any
protocol, without training, as a new MLflow run (kind ``eval``) linked to its source by
``recboard.source_run``. Selection still happened on the source run's validation split, so
the eval run carries the source's ``best_valid/*`` metrics.

A seed group (``bench run --seeds``) is re-scored seed by seed into a group of its own
(``evaluate_saved_group``): the leaderboard then folds the eval runs into one ``mean ± std``
row as it does the training runs, instead of showing whichever seed validated best.
"""
from __future__ import annotations

import contextlib
import time

from recboard.benchmarks import config as C
from recboard.benchmarks.tracking import store as T
from recboard.benchmarks.tracking.saved import SavedRunError, log_saved_run, saved_config, saved_model
from recboard.datasets.registry import dataset_spec, load_dataset
from recboard.models.registry import model_class


def evaluate_saved(run_id: str, sets=None, *, data=None, data_dir=None, cache_dir=None,
                   store: str | None = None, tracking: bool = True, extra_tags: dict | None = None):
    """Score the saved best weights of ``run_id`` on the test split, with ``sets`` (e.g.
    ``protocol=sampled-pop100``) applied over the saved config. Returns a ``RunResult``."""
    from recboard.benchmarks.training import runner
    from recboard.benchmarks.training.routes import route_for
    from recboard.benchmarks.training.trainer import autocast_dtype

    saved, weights = saved_model(run_id, store)
    source = _source_summary(run_id, store)
    cfg = C.resolve(saved["model"], saved["dataset"], {**saved["config"], **C.as_updates(sets)})
    start = time.perf_counter()
    runner.seed_everything(cfg.train.seed)
    device = runner.pick_device(cfg.train.device)
    data = data if data is not None else load_dataset(cfg.dataset_name, data_dir=data_dir, cache_dir=cache_dir)
    if data.identity() != saved["identity"]:
        raise SavedRunError(f"run {run_id} was trained on {cfg.dataset_name} data {saved['identity']}, but the "
                            f"dataset loaded here is {data.identity()}; point --data-dir at the same files")
    route = route_for(cfg.model_name, data)
    model = model_class(cfg.model_name)(cfg.model, route.catalog())
    model.load_state_dict(weights)
    model.to(device)
    evaluator = route.evaluator("test", cfg, device)
    test = evaluator.evaluate(model, autocast_dtype(cfg.train, device), keep_examples=tracking)
    return _record_eval(run_id, source, cfg, data, model, test, evaluator.examples, device,
                        time.perf_counter() - start, tracking, extra_tags)


def is_group(run_id: str, store: str | None = None) -> bool:
    return T.get_run(run_id, store).data.tags.get("recboard.kind") == "group"


def evaluate_saved_group(group_id: str, sets=None, *, data_dir=None, cache_dir=None, store: str | None = None,
                         tracking: bool = True):
    """Re-score every seed of the seed group ``group_id`` (its parent run) with ``sets``, as
    a new group (tagged ``recboard.source_run`` = ``group_id``). Returns a ``GroupResult``."""
    from recboard.benchmarks.experiments.seeds import close_group, group_result, open_group
    from recboard.benchmarks.training import runner

    members = T.search_runs(T.tag_filter({"recboard.group": group_id, "recboard.kind": "run"}, status="FINISHED"),
                            store, output_format="list")
    if not members:
        raise SavedRunError(f"seed group {group_id} has no finished seed runs to re-score")
    members.sort(key=lambda run: int(run.data.tags.get("recboard.seed", 0)))
    seeds = [int(run.data.tags.get("recboard.seed", 0)) for run in members]
    saved = saved_config(members[0].info.run_id, store)
    cfg = C.resolve(saved["model"], saved["dataset"], {**saved["config"], **C.as_updates(sets)})
    data = load_dataset(cfg.dataset_name, data_dir=data_dir, cache_dir=cache_dir)
    name = f"eval {cfg.model_name}@{cfg.dataset_name} ({cfg.train.protocol}) x{len(seeds)} seeds"
    parent = open_group(cfg, seeds, data, name, {"recboard.source_run": group_id}) if tracking else None
    with runner.ending_status(parent) if parent else contextlib.nullcontext():
        results = [evaluate_saved(run.info.run_id, sets, data=data, store=store, tracking=tracking,
                                  extra_tags={"recboard.seed": str(seed),
                                              **({"recboard.group": parent.run_id} if parent else {})})
                   for seed, run in zip(seeds, members)]
        group = group_result(cfg, seeds, results, parent.run_id if parent else None)
        if parent:
            close_group(parent, group)
    return group


def _source_summary(run_id: str, store: str | None) -> dict:
    """The source run's selection metrics, training time and whether it was still improving,
    carried over to the eval run."""
    data = T.get_run(run_id, store).data
    metrics = data.metrics
    valid = {T.metric_label(k[len("best_valid/"):]): v for k, v in metrics.items() if k.startswith("best_valid/")}
    return {"valid": valid, "best_epoch": int(metrics.get("best_epoch", 0)),
            "train_time_s": float(metrics.get("train_time_s", 0.0)),
            # absent on runs recorded before the tag existed: not known, so not marked
            "still_improving": data.tags.get(T.STILL_IMPROVING_TAG) == "true"}


def _record_eval(run_id, source, cfg, data, model, test, examples, device, wall_time_s, tracking, extra_tags):
    from recboard.benchmarks.training import runner

    n_params = sum(p.numel() for p in model.parameters())
    tracker = T.NullTracker()
    if tracking:
        tags = T.run_tags(kind="eval", model=cfg.model_name, dataset=cfg.dataset_name,
                          task=dataset_spec(cfg.dataset_name).task, protocol=cfg.train.protocol,
                          metric=cfg.train.metric, device=runner.device_name(device), source_run=run_id,
                          fingerprint=data.stats.get("fingerprint", "in-memory"), **runner.data_tags(data))
        tags.update(runner.variant_tag(model))
        tags[T.STILL_IMPROVING_TAG] = str(source["still_improving"]).lower()
        tags.update(extra_tags or {})
        tracker = T.Tracker(f"eval {cfg.model_name}@{cfg.dataset_name} ({cfg.train.protocol})", tags,
                            {**cfg.flat(), "model.n_params": n_params}, nested="recboard.group" in tags)
    with runner.ending_status(tracker):
        tracker.log_metrics({**{f"best_valid/{k}": v for k, v in source["valid"].items()},
                             **{f"test/{k}": v for k, v in test.items()}, "best_epoch": source["best_epoch"],
                             "train_time_s": source["train_time_s"], "wall_time_s": wall_time_s})
        if examples is not None:
            cfg.train.save_model = False   # the weights stay with the source run
            log_saved_run(tracker, model, cfg, data.identity(), examples)
    return runner.RunResult(cfg.model_name, cfg.dataset_name, cfg.train.protocol, source["valid"], test,
                            source["best_epoch"], [], wall_time_s, source["train_time_s"],
                            runner.device_name(device), n_params, tracker.run_id, cfg.flat(),
                            {k: v for k, v in data.stats.items() if k != "cache_path"}, source["still_improving"])
