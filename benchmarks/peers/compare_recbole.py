"""Peer check (issue 22): recboard's ML-1m rows against RecBole 1.2.1's, side by side.

For each model, in one invocation and one after the other (never at once), both one-threaded:
recboard's own run (ML-1m, ``protocol=sampled-pop100``, its ML-1m preset, CPU), then
``recbole_ml1m.py`` under RecBole's virtualenv (``--recbole-python``). The table gives both
test HR@10 / NDCG@10, and the training time to the same validation quality: RecBole's best
validation NDCG@10 is the level (for BPR-MF and NCF: its best weights' validation NDCG@10 on
our candidates, see below); ours is the training seconds until our first epoch at or above
it ("never" if none), RecBole's the seconds to its best epoch; ratio = RecBole / ours.

Caveat: the validation (and test) candidates are not the same 100 items: each tool draws
its own 100 popularity-sampled negatives per user, so the level is comparable in
distribution, not example by example. For BPR-MF and NCF, whose RecBole models score a (user,
item) pair alone, RecBole's best weights are also scored on our run's own candidates (the
last column): that comparison holds the negatives fixed. Training seconds exclude
validation on both sides.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python -m recboard.benchmarks.peers.compare_recbole \\
        --models bpr_mf,ncf,fpmc --seed 1 --json /tmp/peers/compare.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recboard.benchmarks.peers.recbole_ml1m import USER_ITEM_MODELS

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE.parents[1].parent / "shared" / "data" / "ml-1m"   # the checkout's ../shared/data
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def time_to_reach(curve: list, level: float):
    """Training seconds at the first epoch whose validation metric is >= ``level``; None if
    no epoch reaches it. ``curve``: [(epoch, cumulative training seconds, metric)] in order."""
    for _epoch, seconds, value in curve:
        if value >= level:
            return seconds
    return None


def best_point(curve: list) -> tuple:
    """(epoch, seconds, metric) of the best epoch; the first one on ties, as early stopping keeps."""
    best = curve[0]
    for point in curve[1:]:
        if point[2] > best[2]:
            best = point
    return tuple(best)


def ratio(theirs, ours):
    return None if theirs is None or not ours else theirs / ours


def run_ours(model: str, seed: int, epochs: int, data_dir: str) -> dict:
    """recboard's run, as ``bench run`` makes it, with cumulative training seconds per epoch.
    The history records each epoch's train + validation time only, so ``Trainer.train_epoch``
    is timed here (wrapped for this run, restored after)."""
    import torch
    from recboard.benchmarks import config as C
    from recboard.benchmarks.training import trainer as T
    from recboard.benchmarks.training.runner import run

    torch.set_num_threads(1)
    sets = ["protocol=sampled-pop100", "device=cpu", f"seed={seed}", "save_model=false"]
    if epochs:
        sets.append(f"epochs={epochs}")
    cfg = C.resolve(model, "ml-1m", sets)
    train_seconds, original = [], T.Trainer.train_epoch

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            train_seconds.append(time.perf_counter() - start)

    T.Trainer.train_epoch = timed
    try:
        result = run(cfg, data_dir=data_dir, tracking=False)
    finally:
        T.Trainer.train_epoch = original
    metric = f"valid/{cfg.train.metric}"
    epochs_run = [h for h in result.history if h.get("epoch", 0) > 0]
    cumulative, curve = 0.0, []
    for h, seconds in zip(epochs_run, train_seconds):
        cumulative += seconds
        curve.append([h["epoch"], round(cumulative, 3), float(h[metric])])
    return {"model": model, "seed": seed, "test": {k: float(result.test_metrics[k]) for k in ("HR@10", "NDCG@10")},
            "valid_curve": curve, "best_epoch": result.best_epoch, "train_seconds": round(result.train_time_s, 3)}


def write_candidates(data_dir: str, seed: int, folder: str) -> None:
    """``folder/valid.tsv`` and ``test.tsv``: every user's candidates in our run of ``seed``
    (target, then the sampled-pop100 negatives), as raw ids of ``ml-1m.txt``, for RecBole."""
    from recboard.benchmarks.evaluation.negatives import cached_negatives
    from recboard.benchmarks.peers.recbole_ml1m import read_ml1m
    from recboard.datasets.registry import load_dataset

    data = load_dataset("ml-1m", data_dir=data_dir)
    raw_users = sorted({int(user) for user, _, _ in read_ml1m(str(Path(data_dir) / "ml-1m.txt"))})
    if len(raw_users) != data.n_users:   # recboard numbers users in the sorted order of their ids
        raise ValueError(f"{data_dir}/ml-1m.txt: {len(raw_users)} users after filtering, recboard has {data.n_users}")
    negatives = cached_negatives(data, "sampled-pop100", seed)
    Path(folder).mkdir(parents=True, exist_ok=True)
    for split in ("valid", "test"):
        _, targets, users = data.eval_examples(split)
        rows = [[raw_users[u], *(data.raw_item_ids[i] for i in (t, *negatives[u]))] for u, t in zip(users, targets)]
        (Path(folder) / f"{split}.tsv").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))


def run_recbole(model: str, seed: int, epochs: int, python: str, data: str, max_train_minutes: float = 0.0,
                candidates: str | None = None) -> dict:
    cmd = [python, str(HERE / "recbole_ml1m.py"), "--model", model, "--seed", str(seed), "--data", data]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    if max_train_minutes:
        cmd += ["--max-train-minutes", str(max_train_minutes)]
    if candidates:
        cmd += ["--candidates", candidates]
    out = subprocess.run(cmd, env={**os.environ, **ONE_THREAD}, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])   # the script's last line is its JSON


def compare(ours: dict | None, theirs: dict) -> dict:
    """One table row: both tests, and each side's training time to RecBole's best validation.
    Where RecBole's best weights were also scored on our candidates, ours is timed to that
    level (``level_on_ours``: the same validation examples) instead of its own draw's."""
    r_epoch, r_seconds, level = best_point(theirs["valid_curve"])
    on_ours = theirs.get("on_recboard_candidates") or {}
    level_on_ours = on_ours["valid"]["NDCG@10"] if "valid" in on_ours else None
    ours_s = time_to_reach(ours["valid_curve"], level if level_on_ours is None else level_on_ours) if ours else None
    return {"model": theirs["model"], "level": level, "level_on_ours": level_on_ours, "recbole_best_epoch": r_epoch,
            "recbole_seconds": r_seconds, "ours_seconds": ours_s, "ratio": ratio(r_seconds, ours_s),
            "recbole_cut_short": theirs.get("cut_short", False), "ours_test": ours and ours["test"],
            "recbole_test": theirs["test"], "recbole_test_on_ours": on_ours.get("test")}


def fmt(x, spec=".4f") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list) -> str:
    lines = ["| model | ours HR@10 | ours NDCG@10 | RecBole HR@10 | RecBole NDCG@10 | RecBole best valid NDCG@10 "
             "(epoch) | ours s to it | RecBole s to it | ratio RecBole/ours | RecBole HR@10 / NDCG@10 on our candidates |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = r["ours_test"] or {}
        ours_s = ("never" if r["ours_test"] else "not run") if r["ours_seconds"] is None else fmt(r["ours_seconds"], ".0f")
        cut = ", cut short" if r.get("recbole_cut_short") else ""
        cut += f"; {fmt(r['level_on_ours'])} on ours" if r.get("level_on_ours") is not None else ""
        same = r.get("recbole_test_on_ours")
        on_ours = f"{fmt(same['HR@10'])} / {fmt(same['NDCG@10'])}" if same else "-"
        lines.append(f"| {r['model']} | {fmt(ours.get('HR@10'))} | {fmt(ours.get('NDCG@10'))} | "
                     f"{fmt(r['recbole_test']['HR@10'])} | {fmt(r['recbole_test']['NDCG@10'])} | "
                     f"{fmt(r['level'])} ({r['recbole_best_epoch']}{cut}) | {ours_s} | {fmt(r['recbole_seconds'], '.0f')} | "
                     f"{fmt(r['ratio'], '.2f')} | {on_ours} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="bpr_mf,ncf,fpmc")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=0, help="epoch cap on both sides (0 = recboard's preset)")
    parser.add_argument("--recbole-python", default="/tmp/recbole-venv/bin/python")
    parser.add_argument("--data-dir", default=DATA_DIR, help="holds ml-1m.txt (read by both)")
    parser.add_argument("--skip-ours", default="", help="models whose recboard run is skipped (comma-separated)")
    parser.add_argument("--json", help="write every run and row here (rewritten after each run)")
    parser.add_argument("--recbole-max-train-minutes", type=float, default=0.0,
                        help="end RecBole's training after this many minutes (0 = none); its row says 'cut short'")
    args = parser.parse_args(argv)
    os.environ.update(ONE_THREAD)
    skip, runs, rows = set(filter(None, args.skip_ours.split(","))), [], []

    def save():   # after each run, so a long invocation cut short keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps({"seed": args.seed, "runs": runs, "rows": rows}, indent=1))

    for model in filter(None, args.models.split(",")):
        runs.append({"ours": None if model in skip else run_ours(model, args.seed, args.epochs, args.data_dir),
                     "recbole": None})
        save()
        with tempfile.TemporaryDirectory(prefix="recboard-candidates-") as folder:
            candidates = folder if model in USER_ITEM_MODELS else None
            if candidates:
                write_candidates(args.data_dir, args.seed, candidates)
            runs[-1]["recbole"] = run_recbole(model, args.seed, args.epochs, args.recbole_python,
                                              str(Path(args.data_dir) / "ml-1m.txt"), args.recbole_max_train_minutes,
                                              candidates)
        rows.append(compare(runs[-1]["ours"], runs[-1]["recbole"]))
        print(f"done {model}: {json.dumps(rows[-1])}", file=sys.stderr)
        save()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
