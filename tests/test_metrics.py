"""Metrics against values worked out by hand."""
import math

import numpy as np
import pytest
import torch

from recboard.benchmarks.evaluation import metrics as M
from recboard.benchmarks.evaluation.negatives import sample_negatives
from recboard.datasets.batches import SequenceData, to_ragged

LOG2 = math.log2


def test_rank_of_target_counts_items_scored_higher():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9]])
    assert M.target_ranks(scores, torch.tensor([2])).tolist() == [2]
    assert M.target_ranks(scores, torch.tensor([3])).tolist() == [0]


def test_ties_rank_pessimistically_so_constant_scores_get_no_credit():
    scores = torch.ones(1, 5)
    assert M.target_ranks(scores, torch.tensor([0])).tolist() == [4]


def test_rank_metrics_hand_values():
    out = M.rank_metrics(torch.tensor([0, 2, 7, 20]))
    assert out["HR@1"].tolist() == [1, 0, 0, 0]
    assert out["HR@5"].tolist() == [1, 1, 0, 0]
    assert out["HR@10"].tolist() == [1, 1, 1, 0]
    assert out["NDCG@5"].tolist() == pytest.approx([1.0, 1 / LOG2(4), 0.0, 0.0])
    assert out["NDCG@10"].tolist() == pytest.approx([1.0, 0.5, 1 / LOG2(9), 0.0])
    assert out["MRR"].tolist() == pytest.approx([1.0, 1 / 3, 1 / 8, 1 / 21])


def test_mask_seen_hides_history_and_padding_but_keeps_target():
    # item 0 is padding; user saw 1, 2 and 3 (3 is also the target: repeat consumption)
    scores = torch.tensor([[9.0, 5.0, 4.0, 3.0, 2.0]])
    seq = torch.tensor([[0, 1, 2, 3]])
    masked = M.mask_seen(scores.clone(), seq, torch.tensor([3]))
    assert masked[0, 0] == -math.inf and masked[0, 1] == -math.inf and masked[0, 2] == -math.inf
    assert masked[0, 3] == 3.0 and masked[0, 4] == 2.0
    assert M.target_ranks(masked, torch.tensor([3])).tolist() == [0]


def test_the_evaluator_masks_every_seen_item_from_flat_histories():
    """Full ranking keeps histories flat (CSR) by batch: the same ranks as padding them all,
    users of very different history lengths in one batch and across batch borders."""
    from recboard.benchmarks.evaluation.evaluators import SequenceEvaluator
    from recboard.datasets.batches import right_pad

    rng = np.random.default_rng(0)
    sequences = [rng.permutation(np.arange(1, 61))[:n].tolist() for n in (3, 50, 4, 7, 60, 3, 12)]
    data = SequenceData("csr", 60, *to_ragged(sequences))
    evaluator = SequenceEvaluator(data, "test", max_len=5, protocol="full", device="cpu", batch_size=3)
    inputs, targets, _ = data.eval_examples("test")
    scores = torch.as_tensor(rng.normal(size=(len(targets), 61)), dtype=torch.float32)
    for start in range(0, len(targets), 3):
        sl = slice(start, start + 3)
        flat = M.mask_seen_pairs(scores[sl].clone(), *evaluator.seen_pairs(sl), torch.as_tensor(targets[sl]))
        padded = M.mask_seen(scores[sl].clone(), torch.as_tensor(right_pad(inputs[sl])), torch.as_tensor(targets[sl]))
        assert torch.equal(flat, padded)
        for row, history in enumerate(inputs[sl]):   # seen items out, the target kept
            hidden = set(torch.isinf(flat[row]).nonzero().flatten().tolist())
            assert hidden == ({0} | set(history.tolist())) - {int(targets[sl][row])}


def test_impression_metrics_hand_values():
    scores = torch.tensor([[0.9, 0.2, 0.5, 0.1]])
    labels = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    out = M.impression_metrics(scores, labels, torch.ones(1, 4, dtype=torch.bool))
    # pairs (pos, neg): (.2,.9) no, (.2,.1) yes, (.5,.9) no, (.5,.1) yes
    assert out["AUC"].item() == pytest.approx(0.5)
    # ranked labels 0,1,1,0 -> (1/2 + 1/3) / 2
    assert out["MRR"].item() == pytest.approx((1 / 2 + 1 / 3) / 2)
    dcg = 1 / LOG2(3) + 1 / LOG2(4)
    idcg = 1 + 1 / LOG2(3)
    assert out["nDCG@5"].item() == pytest.approx(dcg / idcg)
    assert out["nDCG@10"].item() == pytest.approx(dcg / idcg)


def test_impression_padding_never_counts():
    scores = torch.tensor([[0.9, 0.2, 0.5, 0.1, 100.0, 100.0]])
    labels = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, False, False]])
    out = M.impression_metrics(scores, labels, mask)
    assert out["AUC"].item() == pytest.approx(0.5)
    assert out["MRR"].item() == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_auc_ties_count_half_and_one_class_impressions_are_nan():
    out = M.impression_metrics(torch.tensor([[1.0, 1.0], [0.3, 0.2]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]]),
                               torch.ones(2, 2, dtype=torch.bool))
    assert out["AUC"][0].item() == pytest.approx(0.5)
    assert math.isnan(out["AUC"][1].item())
    acc = M.MeanAccumulator()
    acc.add(out)
    assert acc.result()["AUC"] == pytest.approx(0.5)


def test_mean_accumulator_averages_over_batches():
    acc = M.MeanAccumulator()
    acc.add({"HR@10": torch.tensor([1.0, 0.0])})
    acc.add({"HR@10": torch.tensor([1.0])})
    assert acc.result()["HR@10"] == pytest.approx(2 / 3)


def _tiny_sequences():
    offsets, items = to_ragged([[1, 2, 3, 4], [5, 6, 7], [1, 1, 2], list(range(10, 160)), list(range(150, 300))])
    return SequenceData("tiny", 400, offsets, items)


@pytest.mark.parametrize("kind", ["uni", "pop"])
def test_sampled_negatives_exclude_seen_items_and_are_fixed_by_seed(kind):
    data = _tiny_sequences()
    a = sample_negatives(data, kind, seed=3)
    b = sample_negatives(data, kind, seed=3)
    assert a.shape == (5, 100)
    assert np.array_equal(a, b)
    for u in range(5):
        assert not set(a[u]) & set(data.sequence(u).tolist())
        assert 0 not in a[u] and len(set(a[u])) == 100


def test_pop_negatives_only_draw_items_that_occur():
    data = _tiny_sequences()
    data = SequenceData("d", 500, *to_ragged([[1, 2, 3], list(range(100, 300)), list(range(200, 400))]))
    negatives = sample_negatives(data, "pop", 0)
    assert set(negatives.ravel().tolist()) <= set(range(1, 4)) | set(range(100, 400))
    assert negatives[0].min() >= 100
    with pytest.raises(ValueError, match="fewer than 100 negatives"):
        sample_negatives(SequenceData("d", 400, *to_ragged([[1, 2, 3], list(range(150, 300))])), "pop", 0)
    with pytest.raises(ValueError, match="fewer than 100 negatives"):
        sample_negatives(SequenceData("d", 50, *to_ragged([[1, 2, 3]])), "uni", 0)


def test_sampled_protocols_score_only_the_candidates_and_rank_them_as_every_item_scores_would():
    """``score_items`` (101 candidates a user) gives the metrics that scoring every item and
    reading the candidates gives: a BPR-MF with random weights on 150 items, batches of 7."""
    from recboard.benchmarks.evaluation.evaluators import SequenceEvaluator
    from recboard.benchmarks.speed.sampled_eval import EveryItem   # the same model without score_items
    from recboard.models.bpr_mf import BPRMF, BPRMFConfig

    rng = np.random.default_rng(1)
    sequences = [rng.choice(np.arange(1, 151), size=int(n), replace=False).tolist() for n in rng.integers(3, 30, 40)]
    data = SequenceData("candidates", 150, *to_ragged(sequences))
    torch.manual_seed(0)
    model = BPRMF(BPRMFConfig(hidden_size=8), data.catalog())
    torch.nn.init.normal_(model.user_embedding.weight)   # spread scores: no accidental ties
    for protocol in ("sampled-uni100", "sampled-pop100"):
        evaluator = SequenceEvaluator(data, "test", max_len=10, protocol=protocol, device="cpu", batch_size=7)
        fast, slow = evaluator.evaluate(model), evaluator.evaluate(EveryItem(model))
        assert fast == pytest.approx(slow, abs=1e-9)
        assert 0.0 < fast["HR@10"] < 1.0
