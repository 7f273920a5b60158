"""The pure-python pieces of the RecBole peer check (issue 22); RecBole itself is not needed."""
import numpy as np
import torch

from recboard.benchmarks.peers.compare_recbole import (best_point, compare, ratio, table, time_to_reach,
                                                       write_candidates)
from recboard.benchmarks.peers.recbole_ml1m import candidate_metrics, read_ml1m, recbole_config, write_atomic

CURVE = [[1, 10.0, 0.20], [2, 21.5, 0.35], [3, 30.0, 0.41], [4, 42.0, 0.40]]


def test_time_to_reach_first_epoch_at_or_above_the_level():
    assert time_to_reach(CURVE, 0.35) == 21.5    # equal counts as reached
    assert time_to_reach(CURVE, 0.36) == 30.0
    assert time_to_reach(CURVE, 0.10) == 10.0
    assert time_to_reach(CURVE, 0.42) is None   # never


def test_best_point_keeps_the_first_of_ties():
    assert best_point(CURVE) == (3, 30.0, 0.41)
    assert best_point([[1, 1.0, 0.5], [2, 2.0, 0.5]]) == (1, 1.0, 0.5)


def test_compare_row_and_ratio():
    theirs = {"model": "fpmc", "valid_curve": [[1, 20.0, 0.30], [2, 40.0, 0.38], [3, 60.0, 0.37]],
              "test": {"HR@10": 0.5, "NDCG@10": 0.3}}
    ours = {"valid_curve": CURVE, "test": {"HR@10": 0.6, "NDCG@10": 0.35}}
    row = compare(ours, theirs)
    # RecBole's best: 0.38 at epoch 2 after 40 s; ours first reaches 0.38 at epoch 3 (30 s)
    assert (row["level"], row["recbole_best_epoch"], row["recbole_seconds"]) == (0.38, 2, 40.0)
    assert row["ours_seconds"] == 30.0
    assert abs(row["ratio"] - 40.0 / 30.0) < 1e-12
    assert "| fpmc | 0.6000 | 0.3500 | 0.5000 | 0.3000 | 0.3800 (2) | 30 | 40 | 1.33 | - |" in table([row])
    never = compare({**ours, "valid_curve": CURVE[:1]}, theirs)
    assert never["ours_seconds"] is None and never["ratio"] is None
    assert "| never |" in table([never])
    assert "| not run |" in table([compare(None, theirs)])
    assert ratio(10.0, 0) is None
    # a RecBole run ended by --recbole-max-train-minutes: its best is only a lower bound
    cut = compare(ours, {**theirs, "cut_short": True})
    assert cut["recbole_cut_short"] and "| 0.3800 (2, cut short) | 30 | 40 | 1.33 | - |" in table([cut])
    # a user-item model also scored on our candidates: the last column
    # (ours is then timed to RecBole's validation on our candidates: 0.35, reached at 21.5 s)
    same = compare(ours, {**theirs, "on_recboard_candidates": {"test": {"HR@10": 0.48, "NDCG@10": 0.29},
                                                               "valid": {"HR@10": 0.5, "NDCG@10": 0.35}}})
    assert same["ours_seconds"] == 21.5 and abs(same["ratio"] - 40.0 / 21.5) < 1e-12
    assert table([same]).endswith("| 0.3800 (2; 0.3500 on ours) | 22 | 40 | 1.86 | 0.4800 / 0.2900 |")


def test_candidate_metrics_rank_the_target_in_column_zero_ties_against_it():
    scores = torch.tensor([[5.0, *[1.0] * 11],        # rank 0: HR 1, NDCG 1
                           [1.0, 1.0, *[0.0] * 10],   # tie: rank 1, NDCG 1/log2(3)
                           [0.0, *[1.0] * 11]])       # rank 11: outside the top 10
    got = candidate_metrics(scores)
    assert abs(got["HR@10"] - 2 / 3) < 1e-6
    assert abs(got["NDCG@10"] - (1 + 1 / np.log2(3)) / 3) < 1e-6


def test_write_candidates_gives_each_users_raw_target_and_unseen_negatives(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    users = {u: rng.choice(np.arange(1000, 1160), 25, replace=False) for u in range(7, 67)}   # raw ids, not 0..n-1
    (tmp_path / "ml-1m.txt").write_text("".join(f"{u} {i}\n" for u, items in users.items() for i in items))
    write_candidates(str(tmp_path), 1, str(tmp_path / "out"))
    filtered = read_ml1m(str(tmp_path / "ml-1m.txt"))
    kept, kept_items = {int(u) for u, _, _ in filtered}, {int(i) for _, i, _ in filtered}
    for split, at in (("valid", -2), ("test", -1)):
        rows = [line.split("\t") for line in (tmp_path / "out" / f"{split}.tsv").read_text().splitlines()]
        assert len(rows) == len(kept) and all(len(r) == 102 for r in rows)
        for user, target, *negatives in rows:
            history = [int(i) for i in users[int(user)]]
            assert int(target) == [i for i in history if i in kept_items][at]
            assert not set(map(int, negatives)) & set(history) and len(set(negatives)) == 100



def test_read_ml1m_filters_items_then_users_and_numbers_positions(tmp_path):
    # item c has 4 ratings (dropped), then user 3 keeps 4 lines (dropped); users 1 and 2 keep
    # their order, positions renumbered after the filter
    lines = ["1 a", "1 c", "1 b", "1 a", "1 b", "1 a", "1 b",
             "2 b", "2 a", "2 c", "2 b", "2 a", "2 b", "2 c",
             "3 a", "3 a", "3 b", "3 c", "3 a"]
    path = tmp_path / "ml-1m.txt"
    path.write_text("\n".join(lines) + "\n")
    rows = read_ml1m(str(path))
    assert rows == [("1", "a", 0), ("1", "b", 1), ("1", "a", 2), ("1", "b", 3), ("1", "a", 4), ("1", "b", 5),
                    ("2", "b", 0), ("2", "a", 1), ("2", "b", 2), ("2", "a", 3), ("2", "b", 4)]
    inter = write_atomic(rows[:2], str(tmp_path / "out"), "peer")
    assert inter.endswith("peer/peer.inter")
    with open(inter) as f:
        assert f.read() == "user_id:token\titem_id:token\ttimestamp:float\n1\ta\t0\n1\tb\t1\n"


def test_recbole_config_matches_the_protocol():
    cfg = recbole_config("caser", 1, 0, "/d", "/c")
    assert cfg["eval_args"] == {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                                "mode": {"valid": "pop100", "test": "pop100"}}
    assert (cfg["valid_metric"], cfg["topk"], cfg["metrics"]) == ("NDCG@10", [10], ["Hit", "NDCG"])
    assert (cfg["epochs"], cfg["stopping_step"], cfg["MAX_ITEM_LIST_LENGTH"]) == (50, 5, 5)
    assert cfg["train_neg_sample_args"] is None   # CE over all items
    assert "train_neg_sample_args" not in recbole_config("bpr_mf", 1, 7, "/d", "/c")
    assert recbole_config("bpr_mf", 1, 7, "/d", "/c")["epochs"] == 7
