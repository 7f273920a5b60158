"""``bench``: list / prepare / run / tune / leaderboard / demo.

Only argparse and the registries are imported at start-up so ``bench --help`` and
``bench list`` are instant; torch, polars, mlflow and transformers load inside commands.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEMO_MODELS = ("random", "pop", "sasrec", "bert4rec")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder holding the dataset's official files (else the env var or cache)")
    p.add_argument("--cache-dir", help="prepared-data cache (default ~/.cache/recboard or $RECBOARD_CACHE)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="recboard: train, tune and compare sequential and news recommenders.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sub.add_parser("list", help="models and datasets, one line each")

    p = sub.add_parser("prepare", help="parse a dataset into the cache and print its statistics")
    p.add_argument("--dataset", required=True)
    _add_data_args(p)
    p.add_argument("--download", action="store_true", help="download the official files if not on disk")

    p = sub.add_parser("run", help="train + validate + test one model on one dataset, tracked in MLflow")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    _add_data_args(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set epochs=50 --set mask_ratio=0.4")
    p.add_argument("--preset", default="default",
                   help="a named recipe of the model's on top of its paper presets (bench list shows them), "
                        "e.g. --preset strong")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.add_argument("--no-track", action="store_true", help="do not record the run in MLflow")
    p.add_argument("--checkpoint-dir", help="write a checkpoint after every epoch here")
    p.add_argument("--resume", action="store_true", help="continue the run checkpointed in --checkpoint-dir")
    p.add_argument("--from-study", metavar="NAME", help="start from the best parameters of an Optuna study")
    p.add_argument("--storage", help="Optuna storage URL for --from-study (default: the study's sqlite file)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("tune", help="Optuna search over a model's hyper-parameters")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    _add_data_args(p)
    p.add_argument("--trials", type=int, default=20, help="total finished trials the study should reach")
    p.add_argument("--timeout", help="stop starting trials after this long (e.g. 3600, 90m, 1h)")
    p.add_argument("--storage", help="Optuna RDB URL (default: sqlite file per study under ~/recboard/studies)")
    p.add_argument("--study", help="study name (default MODEL-DATASET)")
    p.add_argument("--space", action="append", default=[], metavar="KEY=LOW:HIGH|KEY=A,B,C",
                   help="override the search range of a key (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed config overrides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", help="where to write the trials table and plots")
    p.add_argument("--no-track", action="store_true", help="do not record the study in MLflow")

    p = sub.add_parser("leaderboard", help="paper-style tables from the MLflow runs, published numbers beside")
    p.add_argument("--out", help="write to this file (e.g. leaderboard/LEADERBOARD.md) instead of stdout")
    p.add_argument("--format", choices=("markdown", "csv", "json"),
                   help="default: from --out's suffix (.md/.csv/.json), else markdown")
    p.add_argument("--tracking-uri", action="append",
                   help="read runs from this MLflow store (repeatable: stores from several machines; "
                        "default: as bench run)")
    p.add_argument("--references", help="published-numbers toml (default: leaderboard/references.toml)")
    p.add_argument("--dataset", action="append", help="only these datasets (repeatable)")

    p = sub.add_parser("demo", help="small end-to-end demo on synthetic data: trains, logs to MLflow, prints a table")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser


def cmd_list(args) -> int:
    from recboard.datasets.registry import DATASETS
    from recboard.models.registry import MODELS, model_presets
    print("models:")
    for name, spec in MODELS.items():
        named = [p for p in model_presets(name) if p != "default"]
        extra = f" [presets: {', '.join(named)}]" if named else ""
        print(f"  {name:<16} [{', '.join(spec.tasks)}] {spec.description}{extra}")
    print("\ndatasets:")
    for name, spec in DATASETS.items():
        print(f"  {name:<16} [{spec.task}] {spec.description}")
    return 0


def stats_table(stats: dict) -> str:
    from tabulate import tabulate
    rows = [(k, f"{v:,}" if isinstance(v, int) else (f"{v:,.2f}" if isinstance(v, float) else v))
            for k, v in stats.items() if k not in ("cache_path",)]
    return tabulate(rows, tablefmt="simple", colalign=("left", "right"))


def cmd_prepare(args) -> int:
    from recboard.datasets.registry import load_dataset
    data = load_dataset(args.dataset, data_dir=args.data_dir, cache_dir=args.cache_dir, download=args.download)
    print(f"{args.dataset}: prepared at {data.stats.get('cache_path', '?')}")
    print(stats_table(data.stats))
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
    from recboard.datasets.files import atomic_write_text
    atomic_write_text(Path(path), json.dumps(obj, indent=2, default=str) + "\n")


def cmd_run(args) -> int:
    from recboard.benchmarks import config as C
    from recboard.benchmarks.runner import run

    sets = C.parse_sets(args.set)
    if args.from_study:
        from recboard.benchmarks.tuning import best_params
        sets = {**best_params(args.from_study, storage=args.storage), **sets}
    cfg = C.resolve(args.model, args.dataset, sets, preset=args.preset)
    if args.resume and not args.checkpoint_dir:
        raise C.ConfigError("--resume needs --checkpoint-dir (where the interrupted run wrote its checkpoints)")
    result = run(cfg, data_dir=args.data_dir, cache_dir=args.cache_dir, tracking=not args.no_track,
                 progress=not args.quiet, checkpoint_dir=args.checkpoint_dir, resume=args.resume)
    from recboard.benchmarks.distributed import is_main
    if not is_main():  # torchrun: rank 0 reports
        return 0
    print(metrics_table([result]))
    if result.mlflow_run_id:
        from recboard.benchmarks.tracking import tracking_uri
        print(f"mlflow run {result.mlflow_run_id} in {tracking_uri()}")
    if args.json:
        write_json_atomic(args.json, result.to_json())
    return 0


def cmd_tune(args) -> int:
    from recboard.benchmarks.tuning import tune
    tune(args.model, args.dataset, trials=args.trials, timeout=args.timeout, storage=args.storage,
         study=args.study, space=args.space, sets=args.set, data_dir=args.data_dir, cache_dir=args.cache_dir,
         seed=args.seed, out_dir=args.out_dir, tracking=not args.no_track)
    return 0


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
    """Trains the four sequence models on synthetic data, tracked, then the leaderboard."""
    from recboard.benchmarks import config as C
    from recboard.benchmarks.runner import run
    from recboard.benchmarks.tracking import tracking_uri

    results = []
    for model in DEMO_MODELS:
        print(f"== {model} on synthetic_seq", file=sys.stderr)
        cfg = C.resolve(model, "synthetic_seq", args.set)
        results.append(run(cfg, progress=True))
    print(metrics_table(results))
    print(f"\nruns recorded in {tracking_uri()}  (open: mlflow ui --backend-store-uri {tracking_uri()})\n")
    from recboard.leaderboard import render
    print(render.build(fmt="markdown", datasets=["synthetic_seq"]))
    return 0


COMMANDS = {"list": cmd_list, "prepare": cmd_prepare, "run": cmd_run, "tune": cmd_tune,
            "leaderboard": cmd_leaderboard, "demo": cmd_demo}


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
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        if os.environ.get("RECBOARD_DEBUG"):
            raise
        print(f"bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
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
