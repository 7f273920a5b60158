"""The sampled protocols' negatives: the vectorised draw equals the per-user loop that
defines it, item for item, including users who need more than one block, and the
negatives cached by earlier runs (pinned here) come out again."""
import numpy as np
import pytest

from recboard.benchmarks.evaluation.negatives import first_occurrences, reference_negatives, sample_negatives
from recboard.datasets.batches import SequenceData, to_ragged


def skewed_users(n_users=700, n_items=400, seed=0) -> SequenceData:
    """Popularity like ML-1m's (Zipf-like), a few users who have seen most popular items (they
    need several blocks of popularity-sampled candidates), many light users."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.1
    weights /= weights.sum()
    sequences = []
    for u in range(n_users):
        size = 270 if u % 37 == 5 else int(rng.integers(3, 60))
        sequences.append((rng.choice(n_items, size=size, replace=False, p=weights) + 1).tolist())
    return SequenceData("skewed", n_items, *to_ragged(sequences))


@pytest.mark.parametrize("kind", ["pop", "uni"])
@pytest.mark.parametrize("seed", [0, 3])
def test_the_vectorised_draw_is_the_loop_item_for_item(kind, seed):
    data = skewed_users()
    fast, slow = sample_negatives(data, kind, seed), reference_negatives(data, kind, seed)
    assert fast.shape == (data.n_users, 100) and np.array_equal(fast, slow)


def test_heavy_users_need_several_blocks_and_still_match():
    """The case the fast path hands to the loop: many users in a row needing more than a block."""
    data = skewed_users()
    heavy = [u for u in range(data.n_users) if len(data.sequence(u)) == 270]
    assert len(heavy) >= 15
    negatives = sample_negatives(data, "pop", 1)
    assert np.array_equal(negatives, reference_negatives(data, "pop", 1))
    for u in heavy:
        assert not set(negatives[u].tolist()) & set(data.sequence(u).tolist())
        assert len(set(negatives[u].tolist())) == 100


def test_a_small_draw_by_hand():
    """User 0's uniform negatives are the unseen items of its first block, first occurrences in order."""
    data = SequenceData("pinned", 300, *to_ragged([[1, 2, 3], list(range(10, 150)), [299], list(range(150, 250))]))
    negatives = sample_negatives(data, "pop", 42, n=5)
    assert negatives.tolist() == reference_negatives(data, "pop", 42, n=5).tolist()
    uniform = sample_negatives(data, "uni", 42, n=5)
    rng = np.random.default_rng(42)   # user 0's first block of 10, unseen and distinct, in order
    first_block = [i for i in rng.choice(301, size=10, p=np.r_[0, np.full(300, 1 / 300)]).tolist() if i not in (1, 2, 3)]
    assert uniform[0].tolist() == list(dict.fromkeys(first_block))[:5]


def test_first_occurrences_per_row():
    rows = np.array([[3, 1, 3, 2, 1], [5, 5, 5, 5, 5]])
    assert first_occurrences(rows).tolist() == [[True, True, False, True, False], [True, False, False, False, False]]
