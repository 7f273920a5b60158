"""Measure how far the pinned metrics move across CPU kernels and thread counts.

Float summation order differs between ISAs (ATen's default / AVX2 / AVX-512 kernels) and
thread counts, and a few epochs of training amplify it. This runs every case of
``pinned_metrics.json`` once per (ATEN_CPU_CAPABILITY, threads) setting, each in its own
process (the capability is read when torch loads), and prints the largest difference from
the pin per case and overall. ``test_pinned_metrics.py``'s tolerance is derived from it.

    python tests/golden/pin_spread.py [--write]   # --write: re-pin from the default setting
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PINS = Path(__file__).with_name("pinned_metrics.json")
SETTINGS = [(cap, threads) for cap in ("default", "avx2", "") for threads in (1, 2)]   # "" = torch's own pick

CHILD = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from recboard.benchmarks.config import resolve
from recboard.benchmarks.training.runner import run
from recboard.datasets.registry import load_dataset
cases, cache, out = json.loads(sys.argv[2]), sys.argv[3], {}
data = {}
for case in cases:
    model, dataset, sets = case.split("|")
    if dataset not in data:
        data[dataset] = load_dataset(dataset, cache_dir=cache)
    out[case] = run(resolve(model, dataset, sets.split(",")), data=data[dataset], tracking=False).test_metrics
print(json.dumps(out))
"""


def measure(cases: list, capability: str, threads: int, cache: str) -> dict:
    env = {**os.environ}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads), json.dumps(cases), cache], env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import tempfile
    pins = json.loads(PINS.read_text())
    cases = sorted(pins)
    with tempfile.TemporaryDirectory() as cache:
        runs = {(cap, threads): measure(cases, cap, threads, cache) for cap, threads in SETTINGS}
    worst = 0.0
    for case in cases:
        spread = max(abs(m[case][k] - pins[case][k]) for m in runs.values() for k in pins[case])
        worst = max(worst, spread)
        print(f"{spread:.2e}  {case}")
    print(f"largest difference from the pins over {len(SETTINGS)} settings: {worst:.2e}")
    if "--write" in sys.argv:
        PINS.write_text(json.dumps(runs[("default", 1)], indent=1, sort_keys=True) + "\n")
        print(f"wrote {PINS}")


if __name__ == "__main__":
    main()
