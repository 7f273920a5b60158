"""One validation pass under a sampled protocol (the target among 100 cached negatives), two
ways side by side: scoring only each user's 101 candidates (``score_items``), and scoring
every item then reading the candidates (what a model without ``score_items`` gets).

    python -m recboard.benchmarks.speed.sampled_eval                      # Beauty-shaped, CPU
    python -m recboard.benchmarks.speed.sampled_eval --dataset beauty --data-dir ../shared/data/beauty
    python -m recboard.benchmarks.speed.sampled_eval --size tiny --model ncf

The models have their presets' sizes and untrained weights (the cost does not depend on the
weights). Both ways must give the same metrics; the table says whether they did.
"""
from __future__ import annotations

import argparse
import time

# users, items of the synthetic data (Beauty: the BERT4Rec paper's Table 1 counts)
SIZES = {"beauty": (40_226, 54_542), "tiny": (300, 1000)}
BASELINES = ("bpr_mf", "ncf", "fpmc", "gru4rec", "caser")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m recboard.benchmarks.speed.sampled_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", choices=BASELINES, default=list(BASELINES))
    p.add_argument("--dataset", help="a registered dataset instead of synthetic data (with --data-dir)")
    p.add_argument("--data-dir", help="where --dataset's files are")
    p.add_argument("--size", choices=sorted(SIZES), default="beauty", help="synthetic data's users and items")
    p.add_argument("--protocol", choices=("sampled-pop100", "sampled-uni100"), default="sampled-pop100")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


class EveryItem:
    """A model seen without its ``score_items``: the evaluator scores every item and gathers."""

    def __init__(self, model):
        self.model = model

    @property
    def training(self) -> bool:
        return self.model.training

    def eval(self):
        self.model.eval()

    def train(self, mode: bool = True):
        self.model.train(mode)

    def item_vectors(self):
        return self.model.item_vectors()

    def score(self, batch, item_vectors=None):
        return self.model.score(batch, item_vectors)


def synthetic_sparse(n_users: int, n_items: int, seed: int = 0):
    """Short sequences like Beauty's (at least 5 items, median ~8), items from a Zipf-like
    popularity without repeats within a sequence."""
    import numpy as np
    from recboard.datasets.batches import SequenceData, to_ragged

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    lengths = np.minimum(4 + rng.geometric(0.2, n_users), n_items // 2)
    draws = rng.choice(np.arange(1, n_items + 1), size=int(2 * lengths.sum()), p=popularity)
    sequences, start = [], 0
    for n in lengths:
        picked = list(dict.fromkeys(draws[start:start + 2 * n].tolist()))
        while len(picked) < n:   # rare: too many repeats among the popular items
            picked = list(dict.fromkeys(picked + rng.integers(1, n_items + 1, n).tolist()))
        sequences.append(picked[:n])
        start += 2 * n
    return SequenceData("synthetic_sparse", n_items, *to_ragged(sequences))


def benchmark_data(args, extra: str = ""):
    """(``--dataset``'s data or the synthetic ``--size``, the dataset whose presets apply),
    after printing the device and the data's shape."""
    import torch

    if args.dataset:
        from recboard.datasets.registry import load_dataset
        data, preset_for = load_dataset(args.dataset, data_dir=args.data_dir), args.dataset
    else:
        data, preset_for = synthetic_sparse(*SIZES[args.size]), "beauty"
    print(f"device: {args.device} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
          f"{data.n_users} users, {data.n_items} items" + (f" | {extra}" if extra else ""), flush=True)
    return data, preset_for


def timed(evaluator, model) -> tuple[float, dict]:
    start = time.perf_counter()
    metrics = evaluator.evaluate(model)
    return time.perf_counter() - start, metrics


def main(argv=None) -> list:
    """Print the table and return its rows: [model, candidates s, every item s, speed-up,
    same metrics]."""
    args = parse_args(argv)
    import torch
    from tabulate import tabulate
    from recboard.benchmarks.config import resolve
    from recboard.benchmarks.training.routes import route_for
    from recboard.models.registry import model_class

    data, preset_for = benchmark_data(args, args.protocol)
    device = torch.device(args.device)
    rows = []
    for name in args.model:
        torch.manual_seed(0)
        cfg = resolve(name, preset_for, [f"protocol={args.protocol}"])
        route = route_for(name, data)
        model = model_class(name)(cfg.model, route.catalog()).to(device)
        evaluator = route.evaluator("valid", cfg, device)
        fast, fast_metrics = timed(evaluator, model)
        slow, slow_metrics = timed(evaluator, EveryItem(model))
        same = all(abs(fast_metrics[k] - slow_metrics[k]) < 1e-6 for k in fast_metrics)
        rows.append([name, round(fast, 3), round(slow, 3), round(slow / max(fast, 1e-9), 1), same])
        print(tabulate([rows[-1]], tablefmt="plain"), flush=True)
    print(tabulate(rows, headers=["model", "candidates s", "every item s", "speed-up", "same metrics"]))
    return rows


if __name__ == "__main__":
    main()
