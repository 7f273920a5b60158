"""How the sequence pipeline's costs grow with the data: ML-1m's shape, a 5M-row and ML-20m's
20M-row shape, side by side, each figure with its ratio to the smallest shape.

For every shape a GroupLens ``ratings.csv`` of that shape is generated (long-tailed history
lengths, at least 20 ratings a user as GroupLens kept, Zipf-like item popularity, a few users
with thousands of ratings as in ML-20m) and read by the ``ml-20m`` adapter. Each figure is
measured in a process of its own, so its peak memory (max RSS, the interpreter, torch and the
loaded data included) is its own:

* prepare: ``bench prepare`` (parse, filter, order, write the cache);
* load: the prepared cache read back;
* negatives: the pop100 negatives of the sampled protocol (``evaluation.negatives``);
* SASRec / BPR-MF epoch: one training epoch of each model's ``ml-20m`` recipe (the trainer's
  own epoch: windows, batches, AdamW); with ``--max-steps N`` the first N steps are timed and
  the epoch's time is that rate times its steps (marked "est.");
* full ranking: SASRec's test-split evaluation over every user (scores for all items in
  batches of ``eval_batch_size`` users, every seen item masked), which never holds the
  users x items score matrix nor a users x longest-history one.

    python -m recboard.benchmarks.speed.scale                       # all three shapes
    python -m recboard.benchmarks.speed.scale --shapes ml-1m,5m --max-steps 200
    python -m recboard.benchmarks.speed.scale --json scale.json

Linear growth is the goal: each "x" column should be near the row ratio. Run it on a quiet
machine: other processes on the same cores inflate the times (not the memory).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# users, items, ratings (before the de-duplication of repeated (user, item) draws)
SHAPES = {"ml-1m": (6_040, 3_706, 1_000_209), "5m": (34_600, 13_400, 5_000_000),
          "20m": (138_493, 26_744, 20_000_263),
          "tiny": (300, 200, 12_000)}   # for the tests: seconds, not minutes
PHASES = ("prepare", "load", "negatives", "sasrec", "bpr_mf", "full_ranking")
MIN_RATINGS = 20            # GroupLens kept users with at least 20 ratings
LIMIT_GB = 4.0              # the memory target of every figure


def generate_ratings(path: Path, users: int, items: int, ratings: int, seed: int = 0) -> int:
    """A GroupLens ``ratings.csv`` of this shape; returns its number of rows."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    extra = rng.lognormal(mean=3.5, sigma=1.3, size=users)   # heavy tail: a few thousand-rating users
    extra *= (ratings - MIN_RATINGS * users) / extra.sum()
    lengths = np.minimum(MIN_RATINGS + extra.astype(np.int64), items // 3)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    cdf = np.cumsum(popularity / popularity.sum())
    # draw twice the wanted ratings by popularity, keep each user's first distinct items up to
    # its length: no user rates a movie twice, as in GroupLens files
    drawn = 2 * lengths
    user = np.repeat(np.arange(1, users + 1, dtype=np.int64), drawn)
    item = cdf.searchsorted(rng.random(len(user)), side="right") + 1
    step = rng.integers(0, 3_600, size=len(user))   # seconds between ratings; 0: a tie
    offsets = np.concatenate([[0], np.cumsum(drawn)])
    clock = np.cumsum(step)
    timestamp = clock - np.repeat(clock[offsets[:-1]], drawn) + np.repeat(
        rng.integers(946_684_800, 1_400_000_000, size=users), drawn)
    frame = (pl.DataFrame({"userId": user, "movieId": item, "timestamp": timestamp})
             .unique(subset=["userId", "movieId"], keep="first", maintain_order=True)
             .filter(pl.int_range(pl.len()).over("userId") < pl.col("userId").replace_strict(
                 np.arange(1, users + 1), lengths, return_dtype=pl.Int64)))
    frame = frame.with_columns(rating=pl.Series(rng.integers(1, 11, size=frame.height) / 2)).select(
        "userId", "movieId", "rating", "timestamp")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path)
    return frame.height


def peak_gb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux carries
    ru_maxrss over from the parent into a child, which would report the generator's peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 20   # kB
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # KiB on Linux


def run_phase(phase: str, data_dir: Path, cache_dir: Path, max_steps: int) -> dict:
    """One figure, in this process (the parent starts one process per figure)."""
    from recboard.datasets.registry import load_dataset

    start = time.perf_counter()
    data = load_dataset("ml-20m", data_dir=data_dir, cache_dir=cache_dir)
    if phase in ("prepare", "load"):
        return {"seconds": time.perf_counter() - start, "peak_gb": peak_gb(),
                "users": data.n_users, "items": data.n_items, "interactions": int(len(data.items))}
    if phase == "negatives":
        from recboard.benchmarks.evaluation.negatives import sample_negatives
        start = time.perf_counter()
        sample_negatives(data, "pop", seed=1)
        return {"seconds": time.perf_counter() - start, "peak_gb": peak_gb()}
    return time_model(phase, data, max_steps)


def time_model(phase: str, data, max_steps: int) -> dict:
    import numpy as np
    import torch

    from recboard.benchmarks.config import resolve
    from recboard.benchmarks.training.routes import route_for
    from recboard.benchmarks.training.runner import make_optimizer, seed_everything
    from recboard.benchmarks.training.trainer import Trainer
    from recboard.models.registry import model_class

    name = "sasrec" if phase == "full_ranking" else phase
    cfg = resolve(name, "ml-20m", ["device=cpu", f"max_steps_per_epoch={max_steps}"])
    seed_everything(cfg.train.seed)
    device = torch.device("cpu")
    route = route_for(name, data)
    model = model_class(name)(cfg.model, route.catalog())
    if phase == "full_ranking":
        evaluator = route.evaluator("test", cfg, device)
        start = time.perf_counter()
        metrics = evaluator.evaluate(model)
        return {"seconds": time.perf_counter() - start, "peak_gb": peak_gb(), "users": len(evaluator),
                "NDCG@10": metrics["NDCG@10"]}
    batches = route.training_batches(cfg, device)
    trainer = Trainer(model, make_optimizer(model, cfg, device), batches, None, cfg, device, tracker=None)
    start = time.perf_counter()
    trainer.train_epoch(1, 1, np.random.default_rng(0))
    seconds = time.perf_counter() - start
    steps, epoch_steps = batches.steps_per_epoch(), math.ceil(batches.size / batches.batch_size)
    estimated = epoch_steps > steps
    return {"seconds": seconds * epoch_steps / steps if estimated else seconds, "estimated": estimated,
            "steps": steps, "epoch_steps": epoch_steps, "peak_gb": peak_gb()}


def measure(shape: str, workdir: Path, max_steps: int, phases=PHASES) -> dict:
    users, items, ratings = SHAPES[shape]
    data_dir, cache_dir = workdir / shape / "data", workdir / shape / "cache"
    csv = data_dir / "ratings.csv"
    if not csv.exists():
        print(f"[{shape}] generating ratings.csv ...", file=sys.stderr, flush=True)
        generate_ratings(csv, users, items, ratings)
    results = {}
    for phase in phases:
        if phase == "prepare" and cache_dir.exists():
            import shutil
            shutil.rmtree(cache_dir)
        command = [sys.executable, "-m", "recboard.benchmarks.speed.scale", "--phase", phase,
                   "--data-dir", str(data_dir), "--cache-dir", str(cache_dir), "--max-steps", str(max_steps)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            results[phase] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
        else:
            results[phase] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"[{shape}] {phase}: {results[phase]}", file=sys.stderr, flush=True)
    return results


FIGURES = [("prepare", "bench prepare"), ("load", "cache load"), ("negatives", "pop100 negatives"),
           ("sasrec", "SASRec epoch"), ("bpr_mf", "BPR-MF epoch"), ("full_ranking", "full ranking, test split")]


def report(shapes: list, results: dict) -> str:
    from tabulate import tabulate

    base = shapes[0]
    rows_of = {s: next((r["interactions"] for r in results[s].values() if "interactions" in r), None)
               for s in shapes}
    headers = ["figure", *shapes, *[f"{s} / {base}" for s in shapes[1:]]]
    body = [["interactions", *[f"{rows_of[s]:,}" if rows_of[s] else "?" for s in shapes],
             *[f"{rows_of[s] / rows_of[base]:.1f}x" if rows_of[s] and rows_of[base] else "" for s in shapes[1:]]]]
    for phase, label in FIGURES:
        if not all(phase in results[s] for s in shapes):
            continue
        for what, unit in (("seconds", "s"), ("peak_gb", "GB peak")):
            cells, values = [], {}
            for s in shapes:
                r = results[s][phase]
                if "error" in r:
                    cells.append(f"error: {r['error'][:60]}")
                    continue
                values[s] = r[what]
                mark = " (est.)" if what == "seconds" and r.get("estimated") else ""
                over = " > limit" if what == "peak_gb" and r[what] > LIMIT_GB else ""
                cells.append(f"{r[what]:.2f}{mark}{over}")
            ratios = [f"{values[s] / values[base]:.1f}x" if s in values and values.get(base) else "" for s in shapes[1:]]
            body.append([f"{label} ({unit})", *cells, *ratios])
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="ml-1m,5m,20m", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--workdir", help="where the generated files and caches go (default: a temporary folder)")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="time this many training steps and estimate the epoch from them (0: the whole epoch)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--json", help="also write the figures as JSON here")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)   # one figure, in a child process
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(run_phase(args.phase, Path(args.data_dir), Path(args.cache_dir), args.max_steps)))
        return {}
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; expected some of {', '.join(SHAPES)}")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir) if args.workdir else Path(scratch)
        phases = [p for p in PHASES if p in args.phases.split(",")]
        results = {shape: measure(shape, workdir, args.max_steps, phases) for shape in shapes}
    print(report(shapes, results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
