"""``bench``'s entry point: parse, run the command, turn errors into one line and an exit code.

Exit codes: 0 success, 1 a failure while doing the work (missing or malformed data, a run
that failed, a refused comparison), 2 bad usage (any ``recboard.errors.UsageError``: unknown
option, model, dataset or config key, a value of the wrong type or out of range), 130
interrupted. ``--json -`` writes the JSON to stdout and the human-readable table to stderr.
"""
from __future__ import annotations

import os
import sys

from recboard.benchmarks.cli.parser import build_parser
from recboard.errors import UsageError

EXIT_FAILURE, EXIT_USAGE = 1, 2


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
    # MLflow's own variables, so every run the command starts or reads uses them (the
    # leaderboard's repeatable --tracking-uri is a list of stores to read, not one to use);
    # restored afterwards, so main() called from Python leaves the environment as it was
    mlflow_env = {"MLFLOW_TRACKING_URI": getattr(args, "tracking_uri", None),
                  "MLFLOW_EXPERIMENT_NAME": getattr(args, "experiment", None)}
    mlflow_env = {key: value for key, value in mlflow_env.items() if isinstance(value, str) and value}
    saved_env = {key: os.environ.get(key) for key in mlflow_env}
    os.environ.update(mlflow_env)
    previous = _interrupt_on_sigterm()
    try:
        from recboard.benchmarks.cli.commands import COMMANDS
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
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILURE
    finally:
        if "torch.distributed" in sys.modules:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
        if previous is not None:
            import signal
            signal.signal(signal.SIGTERM, previous)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
