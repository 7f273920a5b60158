"""Training time of a model's whole ML-1m preset, every epoch through ``bench run``'s trainer,
on ML-1m-shaped synthetic data, once per ``compile`` mode: the speed target (BERT4Rec's 400
epochs in <= 30 s of training on one H100) measured the way ``bench run`` trains.

    python -m recboard.benchmarks.speed.whole_preset --device cuda --model bert4rec
    python -m recboard.benchmarks.speed.whole_preset --device cuda --model sasrec --compile off reduce-overhead
    python -m recboard.benchmarks.speed.whole_preset --device cpu --size tiny --epochs 1 --set max_len=20

"train s" is the runner's ``train_time_s``: every step of every epoch, the first epoch's
compilation included (inductor caches compiled kernels on disk, so a second run compiles
faster); validation runs after each epoch as in ``bench run`` but is only in "wall s".
``patience=0``, so every epoch of the preset runs. The data is ``sequential.synthetic_ml1m``:
6,040 users, 3,416 items, long-tailed lengths, cut into the preset's max_len windows.
"""
from __future__ import annotations

import argparse

from recboard.benchmarks.config import COMPILE_MODES
from recboard.benchmarks.speed.sequential import MODELS, SIZES, synthetic_ml1m


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m recboard.benchmarks.speed.whole_preset", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default: cuda)")
    p.add_argument("--model", choices=(*MODELS, "all"), default="bert4rec")
    p.add_argument("--compile", nargs="+", choices=COMPILE_MODES, default=["off", "reduce-overhead"],
                   help="the compile modes to time, one whole run each (default: off reduce-overhead)")
    p.add_argument("--size", choices=("ml-1m", "tiny"), default="ml-1m", help="users and items of the data")
    p.add_argument("--epochs", type=int, default=0, help="instead of the preset's epochs (0 = the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config key")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs < 0:
        p.error(f"--epochs must be >= 0, got {args.epochs}")
    return args


def main(argv=None) -> list:
    """Run, print the table and return its rows: [model, compile, epochs, train s, wall s,
    train s / the first mode's, best valid NDCG@10]."""
    args = parse_args(argv)
    import torch
    from tabulate import tabulate
    from recboard.benchmarks.config import parse_sets, resolve
    from recboard.benchmarks.training.runner import run

    n_users, n_items = SIZES[args.size][:2]
    data = synthetic_ml1m(n_users, n_items, args.seed)
    device = args.device if args.device != "cuda" or torch.cuda.is_available() else None
    if device is None:
        raise SystemExit("--device cuda: no CUDA GPU available (use --device cpu --size tiny)")
    print(f"device: {torch.cuda.get_device_name(device) if device.startswith('cuda') else 'cpu'} | "
          f"torch {torch.__version__} | {n_users} users, {n_items} items", flush=True)
    rows = []
    for name in MODELS if args.model == "all" else (args.model,):
        first = None
        for mode in args.compile:
            sets = {"patience": 0, "device": device, **parse_sets(args.set), "compile": mode}
            if args.epochs:
                sets["epochs"] = args.epochs
            cfg = resolve(name, "ml-1m", sets)
            result = run(cfg, data=data, tracking=False, evaluate_test=False)
            first = first or result.train_time_s
            rows.append([name, mode, len(result.history), round(result.train_time_s, 1),
                         round(result.wall_time_s, 1), f"{result.train_time_s / first:.2f}x",
                         round(max(h["valid/NDCG@10"] for h in result.history), 4)])
            print(f"{name} compile={mode}: {rows[-1][3]} s of training", flush=True)
    print(tabulate(rows, headers=["model", "compile", "epochs", "train s", "wall s", "train s / first",
                                  "best valid NDCG@10"], disable_numparse=True))
    return rows


if __name__ == "__main__":
    main()
