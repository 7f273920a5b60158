"""Training steps with dense and with lazy (``sparse_updates``) item-table updates, side by
side in one process: the same model, batches and seed, the two settings interleaved in
rounds so load on the machine hits both alike.

    python -m recboard.benchmarks.speed.sparse_updates                    # Beauty-shaped, CPU
    python -m recboard.benchmarks.speed.sparse_updates --dataset beauty --data-dir ../shared/data/beauty
    python -m recboard.benchmarks.speed.sparse_updates --size tiny --model bpr_mf --steps 5
"""
from __future__ import annotations

import argparse
import time

from recboard.benchmarks.speed.sampled_eval import SIZES, benchmark_data

MODELS = ("gru4rec", "gru4rec_plus", "bpr_mf")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m recboard.benchmarks.speed.sparse_updates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", choices=MODELS, default=["gru4rec"])
    p.add_argument("--dataset", help="a registered dataset instead of synthetic data (with --data-dir)")
    p.add_argument("--data-dir", help="where --dataset's files are")
    p.add_argument("--size", choices=sorted(SIZES), default="beauty", help="synthetic data's users and items")
    p.add_argument("--steps", type=int, default=25, help="timed steps per setting and round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        p.error(f"--steps and --rounds must be positive, got {args.steps} and {args.rounds}")
    return args


def endless(batches):
    """Training batches epoch after epoch, the same draws for both settings."""
    import numpy as np

    rng = np.random.default_rng(0)
    while True:
        yield from batches.epoch(rng)


def main(argv=None) -> list:
    """Print the table and return its rows: [model, dense ms/step, sparse ms/step, speed-up]."""
    args = parse_args(argv)
    import torch
    from tabulate import tabulate
    from recboard.benchmarks.config import resolve
    from recboard.benchmarks.training.optimizers import make_optimizer
    from recboard.benchmarks.training.routes import route_for
    from recboard.models.registry import model_class

    data, preset_for = benchmark_data(args)
    device = torch.device(args.device)
    rows = []
    for name in args.model:
        steppers = {}
        for sparse in (False, True):
            cfg = resolve(name, preset_for, [f"sparse_updates={str(sparse).lower()}", "weight_decay=0"])
            route = route_for(name, data)
            torch.manual_seed(0)
            model = model_class(name)(cfg.model, route.catalog()).to(device)
            optimizer = make_optimizer(model, cfg, device)
            steppers[sparse] = (model, optimizer, endless(route.training_batches(cfg, device)))

        def run(sparse: bool, n: int) -> float:
            model, optimizer, batches = steppers[sparse]
            start = time.perf_counter()
            for _ in range(n):
                loss = model.loss(next(batches))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            return time.perf_counter() - start

        for sparse in steppers:   # warm-up: first-call allocations
            run(sparse, 2)
        total = {False: 0.0, True: 0.0}
        for _ in range(args.rounds):
            for sparse in steppers:
                total[sparse] += run(sparse, args.steps)
        n = args.rounds * args.steps
        rows.append([name, round(1000 * total[False] / n, 1), round(1000 * total[True] / n, 1),
                     round(total[False] / total[True], 2)])
    print(tabulate(rows, headers=["model", "dense ms/step", "sparse ms/step", "speed-up"]))
    return rows


if __name__ == "__main__":
    main()
