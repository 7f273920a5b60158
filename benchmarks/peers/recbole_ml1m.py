"""Train one RecBole 1.2.1 model on ML-1m under BERT4Rec's protocol; print one JSON line.

Runs INSIDE RecBole's own virtualenv, never recboard's: it must not import recboard (RecBole
pins numpy<2 and pandas<2.3, which recboard does not). ``compare_recbole.py`` calls it via
subprocess. Make the venv (torch 2.13 needs setuptools>=77, so setuptools<70 cannot be pinned
with it, and RecBole's ``ray`` pin is only for ``quick_start``'s tuning, which is not used here):

    python -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0 "numpy<2" "pandas<2.3"
    /tmp/recbole-venv/bin/pip install --no-deps recbole==1.2.1
    /tmp/recbole-venv/bin/pip install scipy tqdm colorlog==4.7.2 colorama==0.4.4 scikit-learn \\
        pyyaml tensorboard thop tabulate plotly texttable psutil

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 /tmp/recbole-venv/bin/python recbole_ml1m.py --model fpmc --seed 1

Data: BERT4Rec's ``ml-1m.txt`` (``user item`` per line, each user's lines in time order), the
file recboard reads, written as a RecBole atomic ``.inter`` file whose timestamp is the line's
position within its user, so RecBole's time ordering ('TO') keeps the file's order.
Protocol: leave-one-out by time (last item test, second-to-last validation), 100 negatives
drawn by popularity per user (RecBole's ``pop100``), HR@10 / NDCG@10, model selection and
early stopping on validation NDCG@10. ``--candidates DIR`` (BPR and NeuMF) also scores the
best weights on recboard's own candidates, written by ``compare_recbole.write_candidates``.

RecBole is imported only inside functions, so the pure-python pieces (``read_ml1m``,
``write_atomic``) can be imported and tested without RecBole installed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

DATASET = "ml1m_peer"
EXPECTED_USERS, EXPECTED_ITEMS = 6040, 3416

# recboard model name -> (RecBole model, settings that differ from RecBole's defaults).
# Everything not listed is RecBole's own default for the model (properties/model/*.yaml).
MODELS = {
    "bpr_mf": ("BPR", {}),
    "ncf": ("NeuMF", {}),
    "fpmc": ("FPMC", {}),
    # RecBole's default window is 50 (ours 200, BERT4Rec's); kept at 50: RecBole trains on every
    # prefix as its own padded example, so 200 would make its epoch ~4x dearer on a 2-core CPU
    "gru4rec": ("GRU4Rec", {"MAX_ITEM_LIST_LENGTH": 50}),
    # RecBole's Caser reads MAX_ITEM_LIST_LENGTH items as its L: 5, the Caser paper's (and our) L
    "caser": ("Caser", {"MAX_ITEM_LIST_LENGTH": 5}),
}
# RecBole models whose predict() reads only the user and the item: these can also be scored on
# recboard's own candidates (``--candidates``), which takes the negatives out of the comparison
USER_ITEM_MODELS = ("bpr_mf", "ncf")
# recboard's ML-1m presets: epoch cap and patience (stopping_step), so both stop alike
STOPPING = {"bpr_mf": (60, 3), "ncf": (40, 3), "fpmc": (20, 3), "gru4rec": (40, 5), "caser": (50, 5)}


def min_count_filter(pairs: list, column: int, least: int) -> list:
    counts = Counter(p[column] for p in pairs)
    return [p for p in pairs if counts[p[column]] >= least]


def read_ml1m(path: str) -> list:
    """[(user, item, position within user)] in file order, filtered as recboard filters
    ML-1m: items with >= 5 ratings, then users with >= 5 (one pass each, in that order)."""
    pairs, seen = [], Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                user, item = line.split()[:2]
                pairs.append((user, item))
    pairs = min_count_filter(min_count_filter(pairs, 1, 5), 0, 5)
    out = []
    for user, item in pairs:   # position after filtering: consecutive, in the file's time order
        out.append((user, item, seen[user]))
        seen[user] += 1
    return out


def write_atomic(rows: list, folder: str, name: str = DATASET) -> str:
    """Write ``folder/name/name.inter`` (RecBole's atomic file: typed tab-separated header)."""
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    path = os.path.join(folder, name, f"{name}.inter")
    with open(path, "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in rows)
    return path


def recbole_config(model: str, seed: int, epochs: int, data_path: str, checkpoint_dir: str) -> dict:
    name, extra = MODELS[model]
    cap, patience = STOPPING[model]
    config = {
        "data_path": data_path, "checkpoint_dir": checkpoint_dir,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        # filtered already in read_ml1m (recboard's order); no second filter here
        "user_inter_num_interval": None, "item_inter_num_interval": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                      "mode": {"valid": "pop100", "test": "pop100"}},
        "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10",
        "epochs": epochs or cap, "stopping_step": patience, "seed": seed, "reproducibility": True,
        "use_gpu": False, "show_progress": False, "state": "WARNING", "worker": 0,
        **extra,
    }
    if name in ("GRU4Rec", "Caser"):   # their default loss is CE over all items: no sampled negatives
        config["train_neg_sample_args"] = None
    return config


def candidate_metrics(scores):
    """HR@10 and NDCG@10 of [users, 1 + negatives] scores, the target in column 0; ties count
    against the target, as recboard's ``target_ranks`` does (which this script, run in
    RecBole's environment, cannot import)."""
    rank = (scores >= scores[:, :1]).sum(1) - 1
    hit = (rank < 10).float()
    return {"HR@10": float(hit.mean()), "NDCG@10": float((hit / (rank.float() + 2).log2()).mean())}


def score_candidates(net, dataset, path: str) -> dict:
    """RecBole's trained user-item model scored on a file of recboard's candidates (one user a
    line: user, target, negatives; raw ids, tab-separated)."""
    import numpy as np
    import torch
    from recbole.data.interaction import Interaction

    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    users = dataset.token2id("user_id", [r[0] for r in rows])
    items = np.stack([dataset.token2id("item_id", r[1:]) for r in rows])       # [users, 101]
    pairs = (torch.as_tensor(np.repeat(users, items.shape[1])), torch.as_tensor(items.reshape(-1)))
    chunk = 1 << 16
    net.eval()
    with torch.no_grad():
        scores = torch.cat([net.predict(Interaction({"user_id": pairs[0][s:s + chunk], "item_id": pairs[1][s:s + chunk]}))
                            for s in range(0, len(pairs[0]), chunk)])
    return candidate_metrics(scores.view(items.shape))


def train(model: str, seed: int, epochs: int, data: str, max_train_minutes: float = 0.0,
          candidates: str | None = None) -> dict:
    """RecBole's run under the protocol. ``max_train_minutes`` (0: none) ends training after the
    first epoch that takes the training seconds past it (``cut_short`` in the result: RecBole's
    best is then a lower bound of its quality, reached on a curve that may still be rising).
    ``candidates``: a folder with recboard's ``valid.tsv`` / ``test.tsv`` candidates, on which the
    best weights are scored too (``on_recboard_candidates``; user-item models only)."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    name = MODELS[model][0]
    with tempfile.TemporaryDirectory(prefix="recbole-ml1m-") as tmp:
        rows = read_ml1m(data)
        users, items = len({r[0] for r in rows}), len({r[1] for r in rows})
        assert (users, items) == (EXPECTED_USERS, EXPECTED_ITEMS), (users, items)
        write_atomic(rows, tmp)
        config = Config(model=name, dataset=DATASET,
                        config_dict=recbole_config(model, seed, epochs, tmp, os.path.join(tmp, "saved")))
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        assert (dataset.user_num - 1, dataset.item_num - 1) == (users, items)   # minus RecBole's padding id
        train_data, valid_data, test_data = data_preparation(config, dataset)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)

        # RecBole's fit() saves the best epoch to disk and evaluate() reloads it with
        # torch.load, which torch >= 2.6 refuses (weights_only=True); and fit() times training
        # and validation together. So the loop is here: train and validate timed apart, the
        # best weights kept in memory, the same early stopping (stopping_step epochs without
        # a better validation NDCG@10).
        curve, best, best_epoch, best_state, since, train_s, cut_short = [], -1.0, 0, None, 0, 0.0, False
        for epoch in range(1, config["epochs"] + 1):
            start = time.perf_counter()
            trainer._train_epoch(train_data, epoch - 1, show_progress=False)
            train_s += time.perf_counter() - start
            _, result = trainer._valid_epoch(valid_data, show_progress=False)
            ndcg = float(result["ndcg@10"])
            curve.append([epoch, round(train_s, 3), ndcg])
            print(f"recbole {name} epoch {epoch} train {train_s:.1f}s valid NDCG@10 {ndcg:.4f}", file=sys.stderr)
            if ndcg > best:
                best, best_epoch, since = ndcg, epoch, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                since += 1
                if since >= config["stopping_step"]:
                    break
            if max_train_minutes and train_s >= 60 * max_train_minutes and epoch < config["epochs"]:
                cut_short = True
                print(f"recbole {name}: stopped at the {max_train_minutes:g}-minute training limit", file=sys.stderr)
                break
        net.load_state_dict(best_state)
        test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        on_ours = candidates and {split: score_candidates(net, dataset, os.path.join(candidates, f"{split}.tsv"))
                                  for split in ("valid", "test")}
    return {"model": model, "recbole_model": name, "seed": seed,
            "test": {"HR@10": float(test["hit@10"]), "NDCG@10": float(test["ndcg@10"])},
            "valid_curve": curve, "best_epoch": best_epoch, "best_valid": best, "train_seconds": round(train_s, 3),
            "cut_short": cut_short, "on_recboard_candidates": on_ours or None, "torch": torch.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=0, help="epoch cap (0 = recboard's ML-1m preset's)")
    shared_ml1m = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml-1m"   # ../shared/data
    parser.add_argument("--data", default=str(shared_ml1m / "ml-1m.txt"))
    parser.add_argument("--max-train-minutes", type=float, default=0.0,
                        help="end training after the epoch that passes this many minutes (0 = no limit)")
    parser.add_argument("--candidates", help="folder of recboard's valid.tsv / test.tsv candidates to score the "
                        f"best weights on too ({', '.join(USER_ITEM_MODELS)} only)")
    args = parser.parse_args(argv)
    if args.candidates and args.model not in USER_ITEM_MODELS:
        parser.error(f"--candidates: only {', '.join(USER_ITEM_MODELS)} score a (user, item) pair alone, "
                     f"got --model {args.model}")
    print(json.dumps(train(args.model, args.seed, args.epochs, args.data, args.max_train_minutes, args.candidates)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
