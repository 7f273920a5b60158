"""SASRec: causal attention, the shifted full-softmax objective, learning, checkpoints,
unknown-item sharing and sdpa/eager agreement. CPU, tiny sizes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recboard.datasets.batches import SequenceBatch
from recboard.models.sasrec import SASRec, SASRecConfig

from sequence_helpers import (UNSEEN_ITEMS, assert_reload_gives_identical_scores, assert_sdpa_matches_eager,
                              assert_unseen_items_score_alike, planted_data, runner_metrics_vs_pop, train,
                              unseen_item_data)

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(**kw) -> SASRecConfig:
    base = dict(hidden_size=32, num_layers=1, num_heads=1, max_len=20, dropout=0.1)
    base.update(kw)
    return SASRecConfig(**base)


def test_attention_is_causal_and_score_reads_the_last_max_len_minus_one_items():
    data = planted_data(n_users=30)
    model = SASRec(small_config(max_len=6, num_layers=2), data.catalog()).eval()
    rows = model.item_to_row[torch.tensor([[0, 3, 4, 5, 6]])]
    changed = rows.clone()
    changed[0, 3] = model.item_to_row[20]
    a, b = model.encode(rows), model.encode(changed)
    assert torch.allclose(a[0, :3], b[0, :3], atol=1e-6)      # the past cannot see the future
    assert not torch.allclose(a[0, 3:], b[0, 3:])
    seq = torch.tensor([[9, 8, 3, 4, 5, 6, 7]])
    scores = model.score(SequenceBatch(seq))
    assert scores.shape == (1, data.n_items + 1) and torch.isinf(scores[0, 0])
    older = seq.clone()
    older[0, :2] = torch.tensor([1, 2])                          # beyond max_len - 1: ignored
    assert torch.equal(model.score(SequenceBatch(older)), scores)
    # right-aligned positions + padding mask: padding width does not matter
    padded = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 6, 7]])
    assert torch.allclose(model.score(SequenceBatch(padded)), model.score(SequenceBatch(torch.tensor([[6, 7]]))),
                          atol=1e-5)


def test_loss_is_cross_entropy_of_every_next_item():
    data = planted_data(n_users=30)
    model = SASRec(small_config(max_len=6), data.catalog()).eval()    # eval: no dropout, deterministic
    seq = torch.tensor([[0, 0, 0, 3, 4, 5, 6],                 # max_len + 1 wide: cropped to max_len
                        [0, 0, 0, 0, 0, 11, 12]])
    hidden = model.encode(model.item_to_row[seq[:, -6:-1]])    # max_len - 1 inputs
    # predictions: 3->4, 4->5, 5->6 in row 0 and 11->12 in row 1
    picked = torch.stack([hidden[0, 2], hidden[0, 3], hidden[0, 4], hidden[1, 4]])
    targets = model.item_to_row[torch.tensor([4, 5, 6, 12])] - 1
    expected = F.cross_entropy(model.output_logits(picked), targets)
    assert model.loss(SequenceBatch(seq)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_falls_on_planted_data():
    torch.manual_seed(0)
    data = planted_data()
    model = SASRec(small_config(), data.catalog())
    losses = train(model, data, steps=40, lr=1e-2)
    assert losses[0] == pytest.approx(np.log(model.n_known + 1), abs=0.3)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])


def test_state_dict_reload_gives_identical_scores():
    data = planted_data(n_users=50)
    assert_reload_gives_identical_scores(lambda: SASRec(small_config(), data.catalog()), data)


def test_items_unseen_in_training_share_one_embedding():
    model = SASRec(small_config(), unseen_item_data().catalog()).eval()
    assert (model.item_to_row[UNSEEN_ITEMS] == model.unknown_row).all()
    assert model.item_embedding.num_embeddings == 10 + 2       # pad, 10 known, unknown
    assert model.describe() == {"coverage": pytest.approx(10 / 46), "known_items": 10, "unknown_items": 36}
    assert_unseen_items_score_alike(model)


def test_sdpa_and_eager_attention_agree():
    data = planted_data(n_users=40)
    catalog = data.catalog()
    assert_sdpa_matches_eager(
        lambda attention: SASRec(small_config(num_layers=2, num_heads=2, attention=attention), catalog), data)


def test_bad_config_names_the_key():
    data = planted_data(n_users=5)
    with pytest.raises(ValueError, match="num_heads"):
        SASRec(small_config(hidden_size=30, num_heads=4), data.catalog())
    with pytest.raises(ValueError, match="max_len"):
        SASRec(small_config(max_len=1), data.catalog())


@pytest.mark.slow
def test_beats_popularity_end_to_end_on_synthetic_transitions():
    """Through the project runner: train, early-stop on validation, full-ranking test."""
    model, pop = runner_metrics_vs_pop("sasrec", ["epochs=4", "batch_size=16", "max_len=12", "device=cpu"])
    # measured: NDCG@10 .77-.78 over three runner seeds vs .047 for popularity
    assert model["NDCG@10"] > pop["NDCG@10"] + 0.5, (model, pop)
    assert model["HR@10"] > 3 * pop["HR@10"], (model, pop)


def test_speed_benchmark_runs_on_cpu(capsys):
    from recboard.benchmarks.speed.sequential import main

    rows = main(["--device", "cpu", "--model", "sasrec", "--n-users", "40", "--n-items", "80",
                 "--max-len", "12", "--batch-size", "8", "--steps", "2", "--warmup", "1"])
    table = {measure: (plain, fast, ratio) for _, measure, plain, fast, ratio, *_ in rows}
    assert table["train seq/s"][0] > 0 and table["train seq/s"][1] > 0
    assert table["eval users/s"][2].endswith("x")
    # same seed, same batches, same model: only dropout draws may differ between the paths
    assert table["final loss"][0] == pytest.approx(table["final loss"][1], rel=0.05)
    out = capsys.readouterr().out
    assert "device: cpu" in out and "fast/plain" in out
