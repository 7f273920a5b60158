"""``bench``: list / prepare / config / run / eval / compare / tune / leaderboard / demo.

Only argparse and the registries are imported at start-up so ``bench --help`` and
``bench list`` are instant; torch, polars, mlflow and transformers load inside commands.

Exit codes: 0 success, 1 a failure while doing the work (missing or malformed data, a run
that failed, a refused comparison), 2 bad usage (unknown option, model, dataset or config
key, a value of the wrong type), 130 interrupted. ``--json -`` writes the JSON to stdout
and the human-readable table to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# bench demo, both tracks in a few CPU minutes: (dataset, model, its own --set values). The news
# track is cold start, so ID models can only tie and the models reading titles show why they exist.
DEMO_MODELS = (
    ("synthetic_seq", "random", ()), ("synthetic_seq", "pop", ()),
    ("synthetic_seq", "sasrec", ()), ("synthetic_seq", "bert4rec", ()),
    ("synthetic_mind_cold", "pop", ()),
    ("synthetic_mind_cold", "nrms_glove", ("epochs=1", "max_steps_per_epoch=40")),
    ("synthetic_mind_cold", "bert4rec", ()),
    ("synthetic_mind_cold", "bert4rec", ("item_encoder=glove", "epochs=6")),
    ("synthetic_mind_cold", "sasrec", ("item_encoder=glove", "epochs=4")),
)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder holding the dataset's official files (else the env var or cache)")
    p.add_argument("--cache-dir", help="prepared-data cache (default ~/.cache/recboard or $RECBOARD_CACHE)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="recboard: train, tune and compare sequential and news recommenders.",
        epilog="exit codes: 0 ok, 1 the work failed, 2 bad usage, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"recboard {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sub.add_parser("list", help="models and datasets, one line each")

    p = sub.add_parser("prepare", help="parse a dataset into the cache and print its statistics")
    p.add_argument("--dataset", required=True)
    _add_data_args(p)
    p.add_argument("--download", action="store_true", help="download the official files if not on disk")

    p = sub.add_parser("run", help="train + validate + test one model on one dataset, tracked in MLflow",
                       epilog=_run_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a registered model, or package.module:Class (required unless --config / "
                                   "--from-run name it)")
    p.add_argument("--dataset", help="a registered dataset, or csv:PATH (required unless --config / --from-run)")
    p.add_argument("--config", metavar="FILE",
                   help="start from a TOML or JSON file: model, dataset, preset and config keys (a run's "
                        "config.json artifact works too); --set still overrides")
    p.add_argument("--from-run", metavar="RUN_ID", help="replay an MLflow run: its model, dataset and config")
    _add_data_args(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set epochs=50 --set mask_ratio=0.4")
    p.add_argument("--preset", default="default",
                   help="a named recipe of the model's on top of its paper presets (bench list shows them), "
                        "e.g. --preset strong")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.add_argument("--no-track", action="store_true", help="do not record the run in MLflow")
    p.add_argument("--experiment", help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else recboard)")
    p.add_argument("--checkpoint-dir", help="write a checkpoint after every epoch here")
    p.add_argument("--resume", action="store_true", help="continue the run checkpointed in --checkpoint-dir")
    p.add_argument("--from-study", metavar="NAME", help="start from the best parameters of an Optuna study")
    p.add_argument("--storage", help="Optuna storage URL for --from-study (default: ~/recboard/optuna.db)")
    p.add_argument("--seeds", metavar="1,2,3",
                   help="train once per seed, grouped in MLflow; --json then holds the mean, std and every seed's run")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no resolved-config summary")

    p = sub.add_parser("eval", help="re-score a run's saved best weights on the test split (any protocol)")
    p.add_argument("--run", required=True, metavar="RUN_ID", help="MLflow run id of a finished bench run")
    _add_data_args(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. --set protocol=sampled-pop100 (applied over the run's saved config)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.add_argument("--no-track", action="store_true", help="do not record the evaluation in MLflow")

    p = sub.add_parser("compare", help="paired significance tests of two runs or seed groups on the same test users")
    p.add_argument("a", metavar="A", help="run id, or the run id of a seed group (bench run --seeds)")
    p.add_argument("b", metavar="B")
    p.add_argument("--metric", help="only this metric (default: all), e.g. NDCG@10")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")

    from recboard.benchmarks.search_space import PRUNERS, SAMPLERS  # plain dicts, nothing heavy
    p = sub.add_parser("tune", help="Optuna search over a model's hyper-parameters")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    _add_data_args(p)
    p.add_argument("--trials", type=int, default=20, help="total finished trials the study should reach")
    p.add_argument("--timeout", help="stop starting trials after this long (e.g. 3600, 90m, 1h)")
    p.add_argument("--storage", help="Optuna RDB URL (default: ~/recboard/optuna.db, one file for every study: "
                                     "optuna-dashboard sqlite:///$HOME/recboard/optuna.db)")
    p.add_argument("--study", help="study name (default MODEL-DATASET)")
    p.add_argument("--space", action="append", default=[], metavar="KEY=LOW:HIGH|KEY=A,B,C",
                   help="override the search range of a key (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed config overrides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="Optuna sampler (default tpe)")
    p.add_argument("--pruner", default="median", choices=PRUNERS,
                   help="stops weak trials early on the per-epoch validation metric (default median)")
    p.add_argument("--out-dir", help="where to write the trials table and plots (default ~/recboard/studies/STUDY)")
    p.add_argument("--no-track", action="store_true", help="do not record the study in MLflow")
    p.add_argument("--experiment", help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else recboard)")
    p.add_argument("--final-seeds", type=int, default=0, metavar="N",
                   help="then train the best trial's configuration with seeds 1..N, as one seed group")
    p.add_argument("--json", metavar="PATH", help="with --final-seeds: the seed group's result as JSON")

    p = sub.add_parser("config", help="print the resolved config of a run, with where each value came from")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for bench run")
    p.add_argument("--preset", default="default", help="as for bench run")

    p = sub.add_parser("leaderboard", help="paper-style tables from the MLflow runs, published numbers beside")
    p.add_argument("--out", help="write to this file (e.g. leaderboard/LEADERBOARD.md) instead of stdout")
    p.add_argument("--format", choices=("markdown", "csv", "json", "latex"),
                   help="default: from --out's suffix (.md/.csv/.json/.tex), else markdown")
    p.add_argument("--tracking-uri", action="append",
                   help="read runs from this MLflow store (repeatable: stores from several machines; "
                        "default: as bench run)")
    p.add_argument("--references", help="published-numbers toml (default: leaderboard/references.toml)")
    p.add_argument("--dataset", action="append", help="only these datasets (repeatable)")

    p = sub.add_parser("demo", help="small end-to-end demo on synthetic data: trains, logs to MLflow, prints a table")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser


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
    print(f"  {'pkg.module:Class':<16} [plug-in] any class following the model contract (README: Plug-ins)")
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
    from recboard.benchmarks.config import IMPRESSION_METRICS, SEQUENCE_METRICS
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


def _version() -> str:
    from recboard import __version__
    return __version__


def _run_epilog() -> str:
    from recboard.datasets.registry import DATASETS
    from recboard.models.registry import MODELS
    return (f"models: {', '.join(MODELS)} (or package.module:Class)\n"
            f"datasets: {', '.join(DATASETS)} (or csv:PATH)\n"
            "config keys: `bench config --model M --dataset D` lists every key with its value and where it "
            "came from;\n  set them with --set KEY=VALUE (README: Everyday use)")


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
    from recboard.benchmarks.runner import run

    model, dataset, preset, base = replayed(args)
    tuned = {}
    if args.from_study:
        from recboard.benchmarks.tuning import best_params
        tuned = best_params(args.from_study, storage=args.storage)
    source = f"run {args.from_run}" if args.from_run else str(args.config)
    cfg = C.resolve(model, dataset, args.set, preset=preset,
                    layers=[(base, source), (tuned, f"study {args.from_study}")])
    if args.seeds is not None:
        from recboard.benchmarks.seeds import parse_seeds
        parse_seeds(args.seeds)
    if not args.quiet:
        print(C.describe(cfg), file=sys.stderr)
    if args.resume and not args.checkpoint_dir:
        raise C.ConfigError("--resume needs --checkpoint-dir (where the interrupted run wrote its checkpoints)")
    if args.experiment:  # MLflow's own variable, so every run this command starts goes there
        os.environ["MLFLOW_EXPERIMENT_NAME"] = args.experiment
    if args.seeds is not None:
        return run_seed_group(cfg, args)
    result = run(cfg, data_dir=args.data_dir, cache_dir=args.cache_dir, tracking=not args.no_track,
                 progress=not args.quiet, checkpoint_dir=args.checkpoint_dir, resume=args.resume)
    from recboard.benchmarks.distributed import is_main
    if not is_main():  # torchrun: rank 0 reports
        return 0
    return report(metrics_table([result]), result.mlflow_run_id and f"mlflow run {result.mlflow_run_id}",
                  args.json, result.to_json())


def report(table: str, recorded: str | None, json_path: str | None, obj: dict) -> int:
    """Print a command's table and where MLflow recorded it (on stderr when the JSON goes to
    stdout); write ``obj`` to ``--json``."""
    out = sys.stderr if json_path == "-" else sys.stdout
    print(table, file=out)
    if recorded:
        from recboard.benchmarks.tracking import tracking_uri
        print(f"{recorded} in {tracking_uri()}", file=out)
    if json_path:
        write_json_atomic(json_path, obj)
    return 0


def run_seed_group(cfg, args) -> int:
    from recboard.benchmarks.seeds import parse_seeds, run_seeds

    seeds = parse_seeds(args.seeds)
    if args.checkpoint_dir or args.resume:
        raise ValueError("--seeds cannot be combined with --checkpoint-dir / --resume (one checkpoint per run)")
    group = run_seeds(cfg, seeds, data_dir=args.data_dir, cache_dir=args.cache_dir, tracking=not args.no_track,
                      progress=not args.quiet)
    return report(group_table(group), group.group_run_id and f"mlflow seed group {group.group_run_id}",
                  args.json, group.to_json())


def group_table(group) -> str:
    from tabulate import tabulate
    names = list(group.metrics)
    rows = [[f"seed {r['seed']}", *[f"{r['metrics'][n]:.4f}" for n in names]] for r in group.runs]
    rows.append([f"mean ± std ({len(group.runs)})",
                 *[f"{group.metrics[n]:.4f} ± {group.metrics_std[n]:.4f}" for n in names]])
    return (f"{group.model} on {group.dataset} ({group.protocol})\n"
            + tabulate(rows, headers=["", *names], disable_numparse=True))


def cmd_eval(args) -> int:
    from recboard.benchmarks.saved import evaluate_saved

    result = evaluate_saved(args.run, args.set, data_dir=args.data_dir, cache_dir=args.cache_dir,
                            tracking=not args.no_track)
    return report(metrics_table([result]),
                  result.mlflow_run_id and f"mlflow run {result.mlflow_run_id} (source run {args.run})",
                  args.json, result.to_json())


def cmd_compare(args) -> int:
    from recboard.benchmarks.significance import compare, format_comparison

    result = compare(args.a, args.b, metric=args.metric)
    return report(format_comparison(result), None, args.json, result)


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
    from recboard.benchmarks.tuning import TuningError, tune

    if args.final_seeds < 0:
        raise TuningError(f"--final-seeds must be >= 0, got {args.final_seeds}")
    study = tune(args.model, args.dataset, trials=args.trials, timeout=args.timeout, storage=args.storage,
                 study=args.study, space=args.space, sets=args.set, data_dir=args.data_dir, cache_dir=args.cache_dir,
                 seed=args.seed, out_dir=args.out_dir, tracking=not args.no_track, sampler=args.sampler,
                 pruner=args.pruner, experiment=args.experiment)
    if not args.final_seeds:
        return 0
    from recboard.benchmarks.seeds import run_seeds
    # the winner is re-run from scratch over fresh seeds: its tuning score was the best of many draws
    cfg = C.resolve(args.model, args.dataset, {**C.parse_sets(args.set), **study.best_trial.params})
    group = run_seeds(cfg, list(range(1, args.final_seeds + 1)), data_dir=args.data_dir, cache_dir=args.cache_dir,
                      tracking=not args.no_track, extra_tags={"recboard.study": study.study_name},
                      run_name=f"{study.study_name} best trial x{args.final_seeds} seeds")
    return report(group_table(group), group.group_run_id and f"mlflow seed group {group.group_run_id}",
                  args.json, group.to_json())


def cmd_leaderboard(args) -> int:
    from recboard.datasets.files import atomic_write_text
    from recboard.leaderboard import render
    fmt = args.format or (render.FORMATS.get(Path(args.out).suffix.lower(), "markdown") if args.out else "markdown")
    text = render.build(fmt=fmt, tracking_uri=args.tracking_uri, references=args.references,
                        datasets=args.dataset)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def cmd_demo(args) -> int:
    """Trains ``DEMO_MODELS`` (sequence models on synthetic_seq; NRMS, ID and text BERT4Rec /
    SASRec on cold-start synthetic news), tracked, then one table per dataset and the leaderboard."""
    import dataclasses

    from recboard.benchmarks import config as C
    from recboard.benchmarks.runner import run
    from recboard.benchmarks.tracking import tracking_uri

    results: dict = {}
    for dataset, model, sets in DEMO_MODELS:
        encoder = C.parse_sets(sets).get("item_encoder")
        label = f"{model} ({encoder} titles)" if encoder else model
        print(f"== {label} on {dataset}", file=sys.stderr)
        result = run(C.resolve(model, dataset, [*sets, *args.set]), progress=True)
        results.setdefault(dataset, []).append(dataclasses.replace(result, model=label))
    for rows in results.values():
        print(metrics_table(rows) + "\n")
    print(f"runs recorded in {tracking_uri()}  (open: mlflow ui --backend-store-uri {tracking_uri()})\n")
    from recboard.leaderboard import render
    print(render.build(fmt="markdown", datasets=list(results)))
    return 0


COMMANDS = {"list": cmd_list, "prepare": cmd_prepare, "run": cmd_run, "config": cmd_config, "tune": cmd_tune,
            "leaderboard": cmd_leaderboard, "demo": cmd_demo, "eval": cmd_eval, "compare": cmd_compare}


EXIT_FAILURE, EXIT_USAGE = 1, 2


def usage_errors() -> tuple:
    """Errors that mean the command was asked for wrongly, as argparse's own (exit code 2)."""
    from recboard.benchmarks.config import ConfigError
    from recboard.benchmarks.search_space import TuningError
    from recboard.benchmarks.seeds import SeedsError
    from recboard.datasets.registry import UnknownDatasetError
    from recboard.models.registry import UnknownNameError
    return ConfigError, SeedsError, TuningError, UnknownDatasetError, UnknownNameError


def _interrupt_on_sigterm():
    """SIGTERM (a scheduler stopping the job) unwinds like Ctrl-C: the last checkpoint is
    kept and the MLflow run is marked KILLED instead of being left RUNNING forever."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner thread)
        return None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    previous = _interrupt_on_sigterm()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`bench prepare | head`): stop quietly, and keep Python from
        # complaining when it flushes stdout on the way out
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        if os.environ.get("RECBOARD_DEBUG"):
            raise
        print(f"bench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, usage_errors()) else EXIT_FAILURE
    finally:
        if "torch.distributed" in sys.modules:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
        if previous is not None:
            import signal
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
