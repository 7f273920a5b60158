"""Many ``bench`` runs side by side in one call, for a lent GPU with a short time budget.

    python -m recboard.benchmarks.gpu.batch paper-table2 --out results/ --parallel 6 --budget 540
    python -m recboard.benchmarks.gpu.batch paper-table2 --dry-run        # the commands, run nothing

Small recommenders leave most of an H100 idle, so a plan's jobs (``PLANS``: each a ``bench``
command line, most important first) run ``--parallel`` at a time. Each job gets

* its own MLflow store, ``OUT/stores/<job>.db`` (one sqlite file per process: no lock
  contention), and its own log, ``OUT/logs/<job>.log``;
* the rest of ``--budget``: when it runs out, every job still running gets SIGTERM (``bench``
  then ends its MLflow runs KILLED and writes no half-finished result) and, ``GRACE_S`` later,
  SIGKILL. A job that has not started by then is left for the next call.

``OUT/state.json`` records each finished job, so the same command on the same ``OUT`` (carried
back from the last session) runs only what is left. At the end the stores are merged into
``OUT/LEADERBOARD.md`` (``bench leaderboard`` with one ``--tracking-uri`` per store) and packed
with the logs, the state and the figures into ``OUT/batch.tar.gz``, one file to bring back; the
runs' per-user test examples (for the leaderboard's significance marks) go into
``OUT/examples.tar.gz``, and every finished run and seed group, as records
(``bench export``), into ``OUT/records.tar.gz``: unpack that into ``leaderboard/`` (it holds
``records/``), rebuild LEADERBOARD.md and commit, and the call's numbers outlive the machine. MLflow records artifact locations as absolute paths, so give ``--out``
an absolute path and unpack both archives at that same path on the machine that reads them.

Training reads the prepared dataset cache (``RECBOARD_CACHE``): prepare here with ``bench
prepare`` and carry the cache; the GPU machine then needs no polars.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

GRACE_S = 20        # between SIGTERM and SIGKILL: time for bench to end its MLflow runs
POLL_S = 0.5


@dataclass(frozen=True)
class Job:
    name: str
    args: tuple     # the bench command line after ``bench``


def _group_job(model: str, dataset: str, protocol: str, preset: str = "", seeds: str = "1,2,3", sets=()) -> Job:
    extra = ("--preset", preset) if preset else ()
    return Job(f"{model}-{dataset}-{protocol}" + (f"-{preset}" if preset else ""),
               ("run", "--model", model, "--dataset", dataset, "--set", f"protocol={protocol}", "--seeds", seeds,
                *extra, *(arg for key_value in sets for arg in ("--set", key_value))))


def _sensitivity(dataset: str, param: str, values: str) -> Job:
    # one sweep per (dataset, parameter) so the figures' points train side by side
    return Job(f"sweep-{dataset}-{param}",
               ("sweep", "--model", "bert4rec", "--dataset", dataset, "--param", f"{param}={values}",
                "--seeds", "1,2,3", "--set", "protocol=sampled-pop100"))


PLANS = {
    # BERT4Rec paper Table 2 (sampled-pop100) and the full-ranking rows of references.toml,
    # three seeds each; pop needs no GPU and its rows are already measured
    "paper-table2": tuple(
        _group_job(model, dataset, protocol)
        for protocol in ("sampled-pop100", "full") for dataset in ("ml-1m", "beauty") for model in ("bert4rec", "sasrec")),
    # the paper's sensitivity figures: hidden size (§4.5, Fig. 4), mask proportion (§4.6,
    # Fig. 5), max length (§4.7, Table 4: its own grid per dataset)
    "paper-sensitivity": (
        _sensitivity("ml-1m", "hidden_size", "16,32,64,128,256"),
        _sensitivity("beauty", "hidden_size", "16,32,64,128,256"),
        _sensitivity("ml-1m", "mask_ratio", "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"),
        _sensitivity("beauty", "mask_ratio", "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"),
        _sensitivity("ml-1m", "max_len", "10,50,100,200,400"),
        _sensitivity("beauty", "max_len", "10,20,30,40,50"),
    ),
    # the source recipes behind the short rows (docs/bert4rec.md):
    # SASRec+ exactly as Klenitskiy & Vasilev trained it; BERT4Rec's original-code recipe on
    # Beauty, 400k steps that take longer than a call can give (a checkpoint is too big to
    # carry back), so one seed, CUDA graphs and a cap: how far its schedule gets in 7 minutes
    "paper-recipes": (
        _group_job("sasrec", "ml-1m", "full", "sasrec+"),
        _group_job("sasrec", "beauty", "full", "sasrec+"),
        _group_job("bert4rec", "beauty", "sampled-pop100", "original", seeds="1",
                sets=("compile=reduce-overhead", "max_train_minutes=7")),
    ),
    # seconds on a CPU: checks the machinery itself (used by the tests)
    "smoke": (
        Job("pop", ("run", "--model", "pop", "--dataset", "synthetic_seq")),
        Job("random", ("run", "--model", "random", "--dataset", "synthetic_seq", "--seeds", "1,2")),
    ),
}


class BatchError(ValueError):
    pass


def _state_path(out: Path) -> Path:
    return out / "state.json"


def load_state(out: Path) -> dict:
    """{job name: {"status", "seconds", "returncode"}} of earlier calls on this ``out``."""
    path = _state_path(out)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BatchError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); delete it to start over") from None


def _store(out: Path, job: Job) -> Path:
    return out / "stores" / f"{job.name}.db"


def _command(job: Job) -> list:
    return [sys.executable, "-m", "recboard.benchmarks.cli", *job.args]


def _start(job: Job, out: Path) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{_store(out, job).resolve()}", PYTHONUNBUFFERED="1")
    # its own process group, so SIGTERM reaches the job and any worker it starts; the child keeps
    # its own copy of the log's descriptor
    with open(out / "logs" / f"{job.name}.log", "w") as log:
        return subprocess.Popen(_command(job), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _signal(process: subprocess.Popen, sig) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def run_plan(jobs, out: Path, parallel: int, budget_s: float, grace_s: float = GRACE_S) -> dict:
    """Runs ``jobs`` not yet finished in ``out``; returns the updated state."""
    (out / "stores").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    state = load_state(out)
    waiting = [job for job in jobs if state.get(job.name, {}).get("status") != "finished"]
    running: dict = {}        # name -> (job, process, start time)
    deadline = time.monotonic() + budget_s
    terminated_at = None
    while waiting or running:
        now = time.monotonic()
        while waiting and len(running) < parallel and now < deadline - grace_s:
            job = waiting.pop(0)
            print(f"[{job.name}] start: bench {' '.join(job.args)}", flush=True)
            running[job.name] = (job, _start(job, out), now)
        if now >= deadline - grace_s and terminated_at is None and running:
            print(f"budget of {budget_s:.0f}s nearly spent: stopping {', '.join(running)}", flush=True)
            for _, process, _ in running.values():
                _signal(process, signal.SIGTERM)
            terminated_at = now
        if terminated_at is not None and now >= terminated_at + grace_s:
            for _, process, _ in running.values():
                _signal(process, signal.SIGKILL)
        for name, (job, process, started) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            status = "finished" if code == 0 else ("stopped by the budget" if terminated_at is not None else "failed")
            state[name] = {"status": status, "seconds": round(time.monotonic() - started, 1), "returncode": code}
            print(f"[{name}] {status} (exit {code}) after {state[name]['seconds']:.0f}s", flush=True)
            del running[name]
        if not running and (not waiting or time.monotonic() >= deadline - grace_s):
            break
        time.sleep(POLL_S)
    for job in waiting:
        state.setdefault(job.name, {"status": "not started"})
    _state_path(out).write_text(json.dumps(state, indent=1))
    return state


def merge(out: Path) -> Path | None:
    """One leaderboard over every store in ``out``, and one archive of stores, logs and state."""
    stores = sorted((out / "stores").glob("*.db"))
    board = out / "LEADERBOARD.md"
    if stores:
        command = [sys.executable, "-m", "recboard.benchmarks.cli", "leaderboard", "--out", str(board), "--no-records"]
        for store in stores:
            command += ["--tracking-uri", f"sqlite:///{store.resolve()}"]
        _bench(command, "merging the stores")
        for store in stores:   # records: what is committed, so no number depends on these stores surviving
            _bench([sys.executable, "-m", "recboard.benchmarks.cli", "export", "--out", str(out / "records"),
                    "--tracking-uri", f"sqlite:///{store.resolve()}"], f"exporting {store.name}")
        _archive(out / "records.tar.gz", out, sorted((out / "records").glob("*.json")))
    _archive(out / "batch.tar.gz", out, [*stores, *sorted((out / "logs").glob("*.log")), _state_path(out), board,
                                         *sorted((out / "figures").glob("*.png"))])
    # the runs' per-user test examples, for the leaderboard's significance marks; apart, because
    # many sweep points on Beauty can outgrow what a device call brings back (the weights stay)
    _archive(out / "examples.tar.gz", out, sorted((out / "stores").glob("artifacts/**/test_examples.npz")))
    return board if board.exists() else None


def _bench(command: list, what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"{what} failed (exit {result.returncode}):\n{result.stderr[-2000:]}", file=sys.stderr)


def _archive(path: Path, root: Path, files) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for file in files:
            if file.exists():
                archive.add(file, arcname=str(file.relative_to(root)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plan", choices=sorted(PLANS), help="which jobs (PLANS in this module)")
    parser.add_argument("--out", default="batch-results", help="stores, logs, state and the merged leaderboard")
    parser.add_argument("--parallel", type=int, default=6, help="jobs at once (default 6)")
    parser.add_argument("--budget", type=float, default=540, help="seconds for the whole call (default 540)")
    parser.add_argument("--only", nargs="*", help="job names to run (default: the whole plan)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    jobs = PLANS[args.plan]
    if args.only:
        unknown = sorted(set(args.only) - {job.name for job in jobs})
        if unknown:
            parser.error(f"--only: no job {', '.join(unknown)} in plan {args.plan}; "
                         f"its jobs: {', '.join(job.name for job in jobs)}")
        jobs = tuple(job for job in jobs if job.name in args.only)
    if args.parallel < 1 or args.budget <= GRACE_S:
        parser.error(f"--parallel must be >= 1 and --budget > {GRACE_S} seconds")
    if args.dry_run:
        for job in jobs:
            print(f"[{job.name}] bench {' '.join(job.args)}")
        return 0
    out = Path(args.out)
    state = run_plan(jobs, out, args.parallel, args.budget)
    board = merge(out)
    for job in jobs:
        entry = state.get(job.name, {})
        print(f"{job.name:<40} {entry.get('status', '?'):<22} {entry.get('seconds', '')}")
    print(f"leaderboard: {board}" if board else "no leaderboard (no store)")
    return 0 if all(state.get(job.name, {}).get("status") == "finished" for job in jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
