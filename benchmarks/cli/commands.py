"""What each ``bench`` command does (the parser and exit codes are in ``recboard.benchmarks.cli``).

Every command returns its exit code; errors propagate to ``cli.main``, which prints them on
one line. Heavy modules are imported inside the functions.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# bench demo, both tracks in a few CPU minutes: (dataset, model, its own --set values). The news
# track is cold start, so ID models can only tie and the models reading titles show why they exist.
DEMO_MODELS = (
    ("synthetic_seq", "random", ()), ("synthetic_seq", "pop", ()),
    ("synthetic_seq", "sasrec", ()), ("synthetic_seq", "bert4rec", ()),
    ("synthetic_mind_cold", "pop", ()),
    ("synthetic_mind_cold", "nrms_glove", ("epochs=1", "max_steps_per_epoch=40")),
    ("synthetic_mind_cold", "bert4rec", ("epochs=3",)),   # ID items: cold news can only tie, whatever the length
    ("synthetic_mind_cold", "bert4rec", ("item_encoder=glove", "epochs=6")),
    ("synthetic_mind_cold", "sasrec", ("item_encoder=glove", "epochs=4")),
)


def cmd_list(args) -> int:
    from recboard.datasets import plugins
    from recboard.datasets.registry import DATASETS
    from recboard.models.registry import MODELS, model_presets
    print("models:")
    for name, spec in MODELS.items():
        named = [p for p in model_presets(name) if p != "default"]
        extra = f" [presets: {', '.join(named)}]" if named else ""
        print(f"  {name:<16} [{', '.join(spec.tasks)}] {spec.description}{extra}")
    # plug-ins are listed from their packages' metadata, not imported: this stays instant
    for name, target in plugins.listed(MODELS, plugins.MODEL_GROUP):
        print(f"  {name:<16} [plug-in] {target}")
    print(f"  {'pkg.module:Class':<16} [plug-in] any class following the model contract (docs/data.md: Plug-ins)")
    print("\ndatasets:")
    for name, spec in DATASETS.items():
        print(f"  {name:<16} [{spec.task}] {spec.description}")
    for name, target in plugins.listed(DATASETS, plugins.DATASET_GROUP):
        print(f"  {name:<16} [plug-in] {target}")
    print(f"  {'csv:PATH':<16} [sequence] your own user,item,time file; csv:PATH?user=..&item=..&time=..&kcore=5")
    return 0


def stats_table(data, summary=None) -> str:
    """The statistics papers report (users, items, interactions, density, mean and median
    length; MIND: news and impressions, ``recboard.leaderboard.datastats``) and then the
    dataset's own, under a header. The 64-hex fingerprint is cut to the 12 characters that
    name the cache folder: enough to tell caches apart without dwarfing the table."""
    from tabulate import tabulate

    from recboard.leaderboard.datastats import DataStats
    rows = (summary or DataStats.of_data(data)).named()
    # the adapters' own names for what the rows above already show (the cache path is printed above)
    shown = ("cache_path", "users", "items", "news", "interactions", "mean_seq_len", "median_seq_len")
    for key, value in data.stats.items():
        if key in shown:
            continue
        if key == "fingerprint":
            value = str(value)[:12]
        rows.append((key, f"{value:,}" if isinstance(value, int) else
                     (f"{value:,.2f}" if isinstance(value, float) else str(value))))
    return tabulate(rows, headers=["statistic", "value"], tablefmt="simple", colalign=("left", "right"),
                    disable_numparse=True)


def cmd_prepare(args) -> int:
    from recboard.datasets.registry import load_dataset
    from recboard.leaderboard.datastats import DataStats
    data = load_dataset(args.dataset, data_dir=args.data_dir, cache_dir=args.cache_dir, download=args.download)
    print(f"{args.dataset}: prepared at {data.stats.get('cache_path', '?')}")
    summary = DataStats.of_data(data)
    size = ", ".join(f"{text} {name}" for name, text in summary.named()[:3])  # users, items / news, ...
    print(f"identity {data.identity()}: {size}")
    print(stats_table(data, summary))
    return 0


def metrics_table(results: list) -> str:
    from tabulate import tabulate
    from recboard.benchmarks.evaluation.protocols import IMPRESSION_METRICS, SEQUENCE_METRICS
    order = IMPRESSION_METRICS if "AUC" in results[0].test_metrics else SEQUENCE_METRICS
    names = [m for m in order if m in results[0].test_metrics]
    rows = [[r.model, r.dataset, r.protocol, *[r.test_metrics.get(n, float("nan")) for n in names],
             f"{r.wall_time_s:.1f}s", r.device] for r in results]
    return tabulate(rows, headers=["model", "dataset", "protocol", *names, "wall", "device"], floatfmt=".4f")


def write_json_atomic(path: str, obj: dict) -> None:
    """``--json PATH``: replaced atomically; ``--json -``: printed to stdout."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    from recboard.datasets.files import atomic_write_text
    atomic_write_text(Path(path), text)


def replayed(args) -> tuple:
    """(model, dataset, preset, config keys) of a replayed run (--from-run / --config); the
    command line's --model, --dataset and --preset win over what the run or file names."""
    from recboard.benchmarks import config as C

    base = C.from_run(args.from_run) if args.from_run else C.from_file(args.config) if args.config else {}
    named = {key: base.pop(key, None) for key in ("model", "dataset", "preset")}
    model, dataset = args.model or named["model"], args.dataset or named["dataset"]
    if not model or not dataset:
        raise C.ConfigError("bench run needs --model and --dataset (or --config / --from-run naming them)")
    preset = args.preset if args.preset != "default" else (named["preset"] or "default")
    return model, dataset, preset, base


def cmd_run(args) -> int:
    from recboard.benchmarks import config as C
    from recboard.benchmarks.training.runner import run

    model, dataset, preset, base = replayed(args)
    tuned = {}
    if args.from_study:
        from recboard.benchmarks.experiments.tuning import best_params
        tuned = best_params(args.from_study, storage=args.storage)
    source = f"run {args.from_run}" if args.from_run else str(args.config)
    cfg = C.resolve(model, dataset, args.set, preset=preset,
                    layers=[(base, source), (tuned, f"study {args.from_study}")])
    seeds = None
    if args.seeds is not None:   # checked before anything is printed or trained
        from recboard.benchmarks.experiments.seeds import parse_seeds
        seeds = parse_seeds(args.seeds)
    if not args.quiet:
        print(C.describe(cfg), file=sys.stderr)
    if args.resume and not args.checkpoint_dir:
        raise C.ConfigError("--resume needs --checkpoint-dir (where the interrupted run wrote its checkpoints)")
    if seeds is not None:
        return run_seed_group(cfg, seeds, args)
    result = run(cfg, data_dir=args.data_dir, cache_dir=args.cache_dir, tracking=not args.no_track,
                 progress=not args.quiet, checkpoint_dir=args.checkpoint_dir, resume=args.resume)
    from recboard.benchmarks.distributed import is_main
    if not is_main():  # torchrun: rank 0 reports
        return 0
    return report(args, metrics_table([result]), result.mlflow_run_id and f"mlflow run {result.mlflow_run_id}",
                  result.to_json())


def report(args, table: str, recorded: str | None, obj: dict) -> int:
    """Print a command's table and where MLflow recorded it (on stderr when the JSON goes to
    stdout); write ``obj`` to ``--json``."""
    json_path = args.json
    out = sys.stderr if json_path == "-" else sys.stdout
    print(table, file=out)
    if recorded:
        from recboard.benchmarks.tracking.store import tracking_uri
        print(f"{recorded} in {tracking_uri()}", file=out)
    if json_path:
        write_json_atomic(json_path, obj)
    return 0


def run_seed_group(cfg, seeds: list, args) -> int:
    from recboard.benchmarks.distributed import is_main
    from recboard.benchmarks.experiments.seeds import run_seeds

    if args.checkpoint_dir or args.resume:
        raise ValueError("--seeds cannot be combined with --checkpoint-dir / --resume (one checkpoint per run)")
    group = run_seeds(cfg, seeds, data_dir=args.data_dir, cache_dir=args.cache_dir, tracking=not args.no_track,
                      progress=not args.quiet)
    if not is_main():  # torchrun: rank 0 reports
        return 0
    return report(args, group_table(group), group.group_run_id and f"mlflow seed group {group.group_run_id}",
                  group.to_json())


def group_table(group) -> str:
    from tabulate import tabulate
    names = list(group.metrics)
    rows = [[f"seed {r['seed']}", *[f"{r['metrics'][n]:.4f}" for n in names]] for r in group.runs]
    rows.append([f"mean ± std ({len(group.runs)})",
                 *[f"{group.metrics[n]:.4f} ± {group.metrics_std[n]:.4f}" for n in names]])
    return (f"{group.model} on {group.dataset} ({group.protocol})\n"
            + tabulate(rows, headers=["", *names], disable_numparse=True))


def cmd_eval(args) -> int:
    from recboard.benchmarks.experiments.rescore import evaluate_saved, evaluate_saved_group, is_group

    if is_group(args.run):
        group = evaluate_saved_group(args.run, args.set, data_dir=args.data_dir, cache_dir=args.cache_dir,
                                     tracking=not args.no_track)
        return report(args, group_table(group),
                      group.group_run_id and f"mlflow seed group {group.group_run_id} (source group {args.run})",
                      group.to_json())
    result = evaluate_saved(args.run, args.set, data_dir=args.data_dir, cache_dir=args.cache_dir,
                            tracking=not args.no_track)
    return report(args, metrics_table([result]),
                  result.mlflow_run_id and f"mlflow run {result.mlflow_run_id} (source run {args.run})",
                  result.to_json())


def cmd_compare(args) -> int:
    from recboard.benchmarks.evaluation.significance import compare, format_comparison

    result = compare(args.a, args.b, metric=args.metric)
    return report(args, format_comparison(result), None, result)


def cmd_config(args) -> int:
    """Every config key with its value and source (dataclass default, task defaults, a
    preset, --set): what ``bench run`` with the same arguments would train."""
    from tabulate import tabulate

    from recboard.benchmarks import config as C
    cfg = C.resolve(args.model, args.dataset, args.set, preset=args.preset)
    rows = [(key, '""' if value == "" else value, cfg.sources.get(key, "default"))  # an empty string is a value
            for key, value in cfg.flat().items()]
    print(f"{args.model} on {args.dataset}:")
    print(tabulate(rows, headers=["key", "value", "source"], tablefmt="simple", disable_numparse=True,
                   missingval="None"))
    return 0


def cmd_tune(args) -> int:
    from recboard.benchmarks import config as C
    from recboard.benchmarks.experiments.tuning import TuningError, tune

    if args.final_seeds < 0:
        raise TuningError(f"--final-seeds must be >= 0, got {args.final_seeds}")
    study = tune(args.model, args.dataset, trials=args.trials, timeout=args.timeout, storage=args.storage,
                 study=args.study, space=args.space, sets=args.set, data_dir=args.data_dir, cache_dir=args.cache_dir,
                 seed=args.seed, out_dir=args.out_dir, tracking=not args.no_track, sampler=args.sampler,
                 pruner=args.pruner)
    if not args.final_seeds:
        return 0
    from recboard.benchmarks.experiments.seeds import run_seeds
    # the winner is re-run from scratch over fresh seeds: its tuning score was the best of many draws
    cfg = C.resolve(args.model, args.dataset, {**C.parse_sets(args.set), **study.best_trial.params})
    group = run_seeds(cfg, list(range(1, args.final_seeds + 1)), data_dir=args.data_dir, cache_dir=args.cache_dir,
                      tracking=not args.no_track, extra_tags={"recboard.study": study.study_name},
                      run_name=f"{study.study_name} best trial x{args.final_seeds} seeds")
    return report(args, group_table(group), group.group_run_id and f"mlflow seed group {group.group_run_id}",
                  group.to_json())


def cmd_sweep(args) -> int:
    """Every point of a one-key sweep trained (or reused) as a seed group, then its figures
    and table drawn from the MLflow store into --out (``recboard.benchmarks.experiments.sweep``,
    ``recboard.leaderboard.figures``)."""
    from recboard.benchmarks import config as C
    from recboard.benchmarks.distributed import is_main
    from recboard.benchmarks.experiments.seeds import parse_seeds
    from recboard.benchmarks.experiments.sweep import plan, run_sweep
    from recboard.benchmarks.tracking.store import tracking_uri
    from recboard.leaderboard import figures

    sweep = plan(args.model, args.dataset, args.param, args.set, preset=args.preset, seeds=parse_seeds(args.seeds),
                 name=args.name)
    if not args.quiet:   # each dataset's configuration at its first value
        firsts: dict = {}
        for point in sweep.points:
            firsts.setdefault(point.dataset, point)
        for point in firsts.values():
            print(C.describe(point.cfg), file=sys.stderr)
    done = run_sweep(sweep, data_dir=args.data_dir, cache_dir=args.cache_dir, progress=not args.quiet)
    if not is_main():  # torchrun: rank 0 reports
        return 0
    out = Path(args.out or Path("sweeps") / sweep.name)
    points = figures.collect_sweep(tracking_uri(), sweep.name, {d.group_run_id for d in done})
    drawn = [(section, figures.draw(section, out)) for section in figures.sections(points)]
    markdown = figures.write_sweep_report(sweep.name, drawn, out)
    stats = {p.group_run_id: p.metrics for p in points}   # test metric -> (mean, std), as plotted
    rows = [{"dataset": d.point.dataset, "value": d.point.value, "group_run_id": d.group_run_id, "reused": d.reused,
             "metrics": {m: v[0] for m, v in stats.get(d.group_run_id, {}).items()},
             "metrics_std": {m: v[1] for m, v in stats.get(d.group_run_id, {}).items()}} for d in done]
    pngs = [str(png) for _, written in drawn for _, png in written]
    table = "\n\n".join(figures.points_table(section) for section, _ in drawn)
    table += f"\n\nwrote {markdown} and {len(pngs)} figure(s) in {out}"
    reused = sum(d.reused for d in done)
    return report(args, table, f"mlflow sweep {sweep.name}: {len(done)} seed groups ({reused} reused)",
                  {"sweep": sweep.name, "model": sweep.model, "param": sweep.param, "seeds": sweep.seeds,
                   "points": rows, "figures": pngs, "markdown": str(markdown)})


def cmd_leaderboard(args) -> int:
    from recboard.benchmarks.config import ConfigError
    from recboard.datasets.files import atomic_write_text
    from recboard.leaderboard import render
    fmt = args.format or (render.FORMATS.get(Path(args.out).suffix.lower(), "markdown") if args.out else "markdown")
    if args.figures and (fmt != "markdown" or args.no_figures):
        raise ConfigError("--figures goes with markdown output and without --no-figures")
    here = Path(args.out).parent if args.out else Path.cwd()   # where the figure links start
    figures_dir = None if (fmt != "markdown" or args.no_figures) else \
        (args.figures or (here / "figures" if args.out else None))
    records = None if args.no_records else (Path(args.records) if args.records else render.COMMITTED)
    text = render.build(fmt=fmt, tracking_uri=args.tracking_uri, references=args.references,
                        datasets=args.dataset, figures_dir=figures_dir, link_dir=here, records=records)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}" + (f" and the sweep figures in {figures_dir}" if "![" in text else ""))
    else:
        print(text)
    return 0


def cmd_demo(args) -> int:
    """Trains ``DEMO_MODELS`` (sequence models on synthetic_seq; NRMS, ID and text BERT4Rec /
    SASRec on cold-start synthetic news), tracked, then one table per dataset and the leaderboard."""
    import dataclasses

    from recboard.benchmarks import config as C
    from recboard.benchmarks.training.runner import run
    from recboard.benchmarks.tracking.store import tracking_uri

    results: dict = {}
    for dataset, model, sets in DEMO_MODELS:
        encoder = C.parse_sets(sets).get("item_encoder")
        label = f"{model} ({encoder} titles)" if encoder else model
        print(f"== {label} on {dataset}", file=sys.stderr)
        result = run(C.resolve(model, dataset, [*sets, *args.set]), progress=not args.quiet)
        results.setdefault(dataset, []).append(dataclasses.replace(result, model=label))
    for rows in results.values():
        print(metrics_table(rows) + "\n")
    print(f"runs recorded in {tracking_uri()}  (open: mlflow ui --backend-store-uri {tracking_uri()})\n")
    from recboard.leaderboard import render
    print(render.build(fmt="markdown", datasets=list(results)))
    return 0


def cmd_export(args) -> int:
    """Records of runs or seed groups (``recboard.benchmarks.tracking.records``)."""
    from recboard.benchmarks.tracking.records import export_records
    from recboard.benchmarks.tracking.store import tracking_uri
    from recboard.leaderboard import runs

    written = export_records(args.runs, tracking_uri(), Path(args.out) if args.out else runs.RECORDS_DIR)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    print(f"{len(written)} record(s) from {tracking_uri()}")
    return 0


def cmd_import(args) -> int:
    """Every run of each record recreated in the MLflow store."""
    from recboard.benchmarks.tracking.records import import_records, record_files
    from recboard.benchmarks.tracking.store import tracking_uri

    paths = [p for given in map(Path, args.records) for p in (record_files(given) if given.is_dir() else [given])]
    for path, run_ids in import_records(paths, tracking_uri()).items():
        print(f"{path}: {len(run_ids)} run(s), {run_ids[0]}{' (seed group)' if len(run_ids) > 1 else ''}")
    print(f"{len(paths)} record(s) imported into {tracking_uri()}")
    return 0


COMMANDS = {"list": cmd_list, "prepare": cmd_prepare, "run": cmd_run, "config": cmd_config, "tune": cmd_tune,
            "sweep": cmd_sweep, "leaderboard": cmd_leaderboard, "demo": cmd_demo, "eval": cmd_eval,
            "compare": cmd_compare, "export": cmd_export, "import": cmd_import}
