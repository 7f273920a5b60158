"""``bench``'s argument parser: every command and option, with no heavy import (argparse
and the registries only), so ``bench --help`` and ``bench list`` are instant. What each
command does is ``recboard.benchmarks.cli.commands``; the entry point and exit codes are
``recboard.benchmarks.cli.main``.
"""
from __future__ import annotations

import argparse

def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder holding the dataset's official files (else the env var or cache)")
    p.add_argument("--cache-dir", help="prepared-data cache (default ~/.cache/recboard or $RECBOARD_CACHE)")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set epochs=50 --set mask_ratio=0.4")
    p.add_argument("--preset", default="default",
                   help="a named recipe of the model's on top of its paper presets (bench list shows them), "
                        "e.g. --preset strong")


def _add_output_args(p: argparse.ArgumentParser, json: bool = True) -> None:
    """``--json`` and ``--quiet``, which mean the same on every command that has them."""
    if json:
        p.add_argument("--json", metavar="PATH",
                       help="also write the result as JSON ('-': JSON on stdout, the table on stderr)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars and no resolved-config summary: the results and where they were recorded")


def _add_tracking_args(p: argparse.ArgumentParser, experiment: bool = True) -> None:
    """``--tracking-uri`` and ``--experiment`` set MLflow's own variables for the whole command
    (``main``), so every run it starts or reads uses them."""
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite under ~/recboard)")
    if experiment:
        p.add_argument("--experiment", help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else recboard)")


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
    _add_config_args(p)
    _add_output_args(p)
    _add_tracking_args(p)
    p.add_argument("--no-track", action="store_true", help="do not record the run in MLflow")
    p.add_argument("--checkpoint-dir", help="write a checkpoint after every epoch here")
    p.add_argument("--resume", action="store_true", help="continue the run checkpointed in --checkpoint-dir")
    p.add_argument("--from-study", metavar="NAME", help="start from the best parameters of an Optuna study")
    p.add_argument("--storage", help="Optuna storage URL for --from-study (default: ~/recboard/optuna.db)")
    p.add_argument("--seeds", metavar="1,2,3",
                   help="train once per seed, grouped in MLflow; --json then holds the mean, std and every seed's run")

    p = sub.add_parser("eval", help="re-score a run's saved best weights on the test split (any protocol)")
    p.add_argument("--run", required=True, metavar="RUN_ID",
                   help="MLflow run id of a finished bench run, or of a seed group (every seed is re-scored, "
                        "as a group of its own)")
    _add_data_args(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. --set protocol=sampled-pop100 (applied over the run's saved config)")
    _add_output_args(p)
    _add_tracking_args(p)
    p.add_argument("--no-track", action="store_true", help="do not record the evaluation in MLflow")

    p = sub.add_parser("compare", help="paired significance tests of two runs or seed groups on the same test users")
    p.add_argument("a", metavar="A", help="run id, or the run id of a seed group (bench run --seeds)")
    p.add_argument("b", metavar="B")
    p.add_argument("--metric", help="only this metric (default: all), e.g. NDCG@10")
    _add_output_args(p)
    _add_tracking_args(p, experiment=False)

    from recboard.benchmarks.experiments.search_space import PRUNERS, SAMPLERS  # plain dicts, nothing heavy
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
    _add_tracking_args(p)
    p.add_argument("--final-seeds", type=int, default=0, metavar="N",
                   help="then train the best trial's configuration with seeds 1..N, as one seed group")
    _add_output_args(p)

    p = sub.add_parser("sweep", help="one config key over a list of values, a seed group per point; the "
                                     "BERT4Rec paper's sensitivity figures from MLflow")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True, help="one or more, comma-separated, e.g. ml-1m,beauty")
    p.add_argument("--param", required=True, action="append", metavar="KEY=V1,V2,...",
                   help="the key to vary and its values, e.g. hidden_size=16,32,64,128,256 (one key per sweep)")
    p.add_argument("--seeds", default="1,2,3", metavar="1,2,3", help="seeds of every point (default 1,2,3)")
    _add_data_args(p)
    _add_config_args(p)
    _add_tracking_args(p)
    p.add_argument("--name", help="sweep name (default MODEL-KEY); re-running a name reuses its finished points")
    p.add_argument("--out", metavar="DIR", help="where the figures and sweep.md go (default sweeps/NAME/)")
    _add_output_args(p)

    p = sub.add_parser("config", help="print the resolved config of a run, with where each value came from")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    _add_config_args(p)

    p = sub.add_parser("leaderboard", help="paper-style tables from the MLflow runs, published numbers beside")
    p.add_argument("--out", help="write to this file (e.g. leaderboard/LEADERBOARD.md) instead of stdout")
    p.add_argument("--format", choices=("markdown", "csv", "json", "latex"),
                   help="default: from --out's suffix (.md/.csv/.json/.tex), else markdown")
    p.add_argument("--tracking-uri", action="append",
                   help="read runs from this MLflow store (repeatable: stores from several machines; "
                        "default: as bench run)")
    p.add_argument("--references", help="published-numbers toml (default: leaderboard/references.toml)")
    p.add_argument("--dataset", action="append", help="only these datasets (repeatable)")
    p.add_argument("--figures", metavar="DIR",
                   help="draw the bench sweep figures into DIR and embed them in the markdown (default with a "
                        "markdown --out: figures/ beside it)")
    p.add_argument("--no-figures", action="store_true", help="leave the sweep figures out")
    p.add_argument("--records", metavar="DIR", help="read the records in DIR (default: leaderboard/records/)")
    p.add_argument("--no-records", action="store_true", help="MLflow runs only, no records")

    p = sub.add_parser("export", help="write runs or seed groups of an MLflow store as records (small committed "
                                      "files the leaderboard is rebuilt from)")
    p.add_argument("runs", nargs="*", metavar="RUN_ID",
                   help="runs or seed groups (a group by its parent run or any seed); none: every finished run")
    p.add_argument("--out", default=None, metavar="DIR", help="where the records go (default: leaderboard/records/)")
    _add_tracking_args(p, experiment=False)

    p = sub.add_parser("import", help="recreate the runs of records in an MLflow store (bench compare and the "
                                      "MLflow UI then read them)")
    p.add_argument("records", nargs="+", metavar="PATH", help="record files, or folders of them")
    _add_tracking_args(p, experiment=False)

    p = sub.add_parser("demo", help="small end-to-end demo on synthetic data: trains, logs to MLflow, prints a table")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_output_args(p, json=False)
    _add_tracking_args(p)
    return parser


def _version() -> str:
    from recboard import __version__
    return __version__


def _run_epilog() -> str:
    from recboard.datasets.registry import DATASETS
    from recboard.models.registry import MODELS
    return (f"models: {', '.join(MODELS)} (or package.module:Class)\n"
            f"datasets: {', '.join(DATASETS)} (or csv:PATH)\n"
            "config keys: `bench config --model M --dataset D` lists every key with its value and where it "
            "came from;\n  set them with --set KEY=VALUE (docs/configuration.md)")
