"""The speed suite's GPU measurements as one script, for a lent GPU with a short time budget.

    python -m recboard.benchmarks.speed.gpu_suite --out results/       # on the GPU, <= 9 min
    python -m recboard.benchmarks.speed.gpu_suite --dry-run            # the commands, run nothing

Runs the speed benchmarks one after another (most informative first, so a budget cut short
still leaves the main figures), each under its own timeout cut to what is left of
``--budget`` (one that would get under a minute is skipped), and writes each one's printed
table to ``--out/<name>.txt`` (and ``.json`` where the benchmark writes one). A benchmark that
times out or fails is recorded as such and the next one runs. The sequential ones come
first: their compiled paths (``compile``) are the ones no GPU has measured yet.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

# (name, module, arguments, timeout in seconds); the module is recboard.benchmarks.speed.<module>
MEASUREMENTS = (
    # plain / fast / chunked / compiled / CUDA graphs step times of both models, side by side
    ("sequential-ml-1m", "sequential", ["--size", "ml-1m"], 180),
    # the target itself: BERT4Rec's 400 preset epochs through the trainer with CUDA graphs
    ("bert4rec-ml-1m-whole-preset", "whole_preset", ["--model", "bert4rec", "--compile", "reduce-overhead"], 150),
    ("nrms-bert-seed-recipe", "news", ["--size", "bert-base", "--batch-size", "128", "--full-epoch", "--skip-naive"],
     300),
    ("sequential-mind-large", "sequential", ["--size", "mind-large", "--loss-chunk", "2048", "--paths", "chunked"],
     140),
)
BUDGET_S = 540   # one 10-minute device call with room for start-up
SHORTEST_S = 60  # a measurement that would get less is skipped


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="speed-results", help="folder for the tables")
    parser.add_argument("--only", nargs="*", help="names of the measurements to run (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds for all (default {BUDGET_S})")
    args = parser.parse_args(argv)
    out = Path(args.out)
    done, deadline = [], time.perf_counter() + args.budget
    for name, module, extra, timeout in MEASUREMENTS:
        if args.only and name not in args.only:
            continue
        timeout = min(timeout, int(deadline - time.perf_counter()))
        if timeout < SHORTEST_S and not args.dry_run:
            print(f"[{name}] skipped: {max(timeout, 0)}s of the budget left", flush=True)
            done.append((name, None, "skipped"))
            continue
        command = [sys.executable, "-m", f"recboard.benchmarks.speed.{module}", "--device", args.device, *extra]
        if module == "news":
            command += ["--json", str(out / f"{name}.json")]
        print(f"[{name}] timeout {timeout}s: {' '.join(command[1:])}", flush=True)
        if args.dry_run:
            done.append((name, command, None))
            continue
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            status, text = f"exit {result.returncode}", result.stdout + result.stderr[-4000:]
        except subprocess.TimeoutExpired as exc:
            partial = exc.stdout or b""   # bytes, whatever text= says (subprocess docs)
            status = f"timed out after {timeout}s"
            text = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        (out / f"{name}.txt").write_text(f"# {' '.join(command[1:])}\n# {status}\n{text}")
        print(f"[{name}] {status} in {time.perf_counter() - start:.0f}s -> {out / (name + '.txt')}", flush=True)
        done.append((name, command, status))
    return done


if __name__ == "__main__":
    main()
