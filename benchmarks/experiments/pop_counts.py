"""Which popularity did the BERT4Rec paper's POP rank by? The measurement behind the
Beauty sampled-pop100 sentence in ``leaderboard/references.toml`` (``[[gaps]]``).

    python -m recboard.benchmarks.experiments.pop_counts --dataset beauty --data-dir ../shared/data/beauty

``pop`` ranks by training counts (the last two items of every user held out). The original
code counts the popularity its evaluation negatives are drawn from over the whole file, test
items included; a POP counted the same way sees each user's test item once more. Both are
scored here on the same split, protocol and negatives as ``bench run --model pop`` (the
``seed`` picks the negatives), through the same evaluator.
"""
from __future__ import annotations

import argparse


def measure(dataset: str, protocol: str = "sampled-pop100", seed: int = 42, data=None, data_dir=None,
            cache_dir=None) -> dict:
    """{"training counts": test metrics, "whole-file counts": test metrics}."""
    import numpy as np
    import torch

    from recboard.benchmarks.config import resolve
    from recboard.benchmarks.training.routes import route_for
    from recboard.datasets.registry import load_dataset
    from recboard.models.pop import PopularityConfig, PopularityModel

    cfg = resolve("pop", dataset, [f"protocol={protocol}", f"seed={seed}", "device=cpu"])
    data = data if data is not None else load_dataset(dataset, data_dir=data_dir, cache_dir=cache_dir)
    route = route_for("pop", data)
    model = PopularityModel(PopularityConfig(), route.catalog())
    evaluator = route.evaluator("test", cfg, torch.device("cpu"))
    out = {"training counts": evaluator.evaluate(model)}
    model.counts = torch.as_tensor(np.bincount(data.items, minlength=data.n_items + 1), dtype=torch.float32)
    out["whole-file counts"] = evaluator.evaluate(model)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m recboard.benchmarks.experiments.pop_counts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--protocol", default="sampled-pop100")
    parser.add_argument("--seed", type=int, default=42, help="the negatives' seed, as bench run's seed")
    parser.add_argument("--data-dir")
    parser.add_argument("--cache-dir")
    args = parser.parse_args(argv)
    from tabulate import tabulate

    from recboard.benchmarks.evaluation.protocols import SEQUENCE_METRICS

    results = measure(args.dataset, args.protocol, args.seed, data_dir=args.data_dir, cache_dir=args.cache_dir)
    names = [n for n in SEQUENCE_METRICS if n in results["training counts"]]
    print(f"pop on {args.dataset} ({args.protocol}, seed {args.seed}), test split")
    print(tabulate([[label, *(f"{metrics[n]:.4f}" for n in names)] for label, metrics in results.items()],
                   headers=["popularity", *names], disable_numparse=True))
    return results


if __name__ == "__main__":
    main()
