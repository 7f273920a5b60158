"""The BERT4Rec paper's Table 2 baselines (bpr_mf, ncf, fpmc, gru4rec, gru4rec_plus, caser):
they learn planted structure through the real runner, their losses fall, their configs
reject bad values by key, and their scores read what each model is meant to read. CPU,
tiny sizes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recboard.benchmarks.config import ConfigError, resolve
from recboard.datasets.batches import ItemCatalog, SequenceBatch, left_pad
from recboard.models.gru4rec import right_aligned
from recboard.models.negatives import history_keys, outside, unseen
from recboard.models.registry import MODELS, model_class, model_presets, model_spec

from sequence_helpers import planted_data, runner_metrics_vs_pop


pytestmark = pytest.mark.usefixtures("one_thread")

BASELINES = ["bpr_mf", "ncf", "fpmc", "gru4rec", "gru4rec_plus", "caser"]
WITH_USERS = ["bpr_mf", "ncf", "fpmc", "caser"]
SMALL = {"hidden_size": 16}
# GRU4Rec+'s 2048 extra negatives outnumber the 100 planted items; fewer keep the test quick
QUICK = {"gru4rec_plus": ["n_sample=256"]}


def build(name: str, catalog: ItemCatalog, **settings):
    """``name``'s model with its registry recipe, hidden size 16 and ``settings``."""
    config = model_class(name).config_class()
    for key, value in {**model_spec(name).overrides, **SMALL, **settings}.items():
        setattr(config, key, value)
    return model_class(name)(config, catalog)


def windows(data, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every user's training part, left-padded, and the user indices."""
    return torch.as_tensor(left_pad(data.train_sequences(), max_len)), torch.arange(data.n_users)


@pytest.mark.parametrize("name", BASELINES)
def test_beats_popularity_by_far_on_planted_transitions(name):
    model, pop = runner_metrics_vs_pop(name, ["device=cpu", *QUICK.get(name, [])])
    assert model["NDCG@10"] > max(4 * pop["NDCG@10"], pop["NDCG@10"] + 0.25), (model, pop)


@pytest.mark.parametrize("name", BASELINES)
def test_loss_falls_and_the_same_seed_draws_the_same_negatives(name):
    data = planted_data(n_users=120)
    torch.manual_seed(0)
    model = build(name, data.catalog(), **({"n_sample": 32} if name == "gru4rec_plus" else {}))
    seqs, users = windows(data, 20)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        pick = torch.randint(0, len(seqs), (32,))
        loss = model.loss(SequenceBatch(seqs[pick], user=users[pick]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses
    model.eval()   # no dropout: only the sampled negatives are random
    batch = SequenceBatch(seqs[:8], user=users[:8])
    torch.manual_seed(5)
    first = model.loss(batch)
    torch.manual_seed(5)
    assert model.loss(batch) == first


@pytest.mark.parametrize("name, key, value, expected", [
    ("bpr_mf", "hidden_size", 0, "a positive integer"),
    ("bpr_mf", "l2_reg", -0.1, ">= 0"),
    ("ncf", "num_negatives", 0, "a positive integer"),
    ("ncf", "mlp_layers", 0, "a positive integer"),
    ("fpmc", "init_std", 0.0, "> 0"),
    ("gru4rec", "loss", "top2", "one of top1, bpr-max, cross-entropy"),
    ("gru4rec_plus", "sample_alpha", 1.5, r"in \[0, 1\] \(0 = uniform, 1 = popularity\)"),
    ("gru4rec", "dropout_p_hidden", 1.0, r"in \[0, 1\)"),
    ("caser", "dropout", 1.5, r"in \[0, 1\)"),
    ("caser", "markov_order", 0, "a positive integer"),
])
def test_check_names_the_key_its_value_and_what_was_expected(name, key, value, expected):
    config = model_class(name).config_class()
    setattr(config, key, value)
    model_name = "gru4rec" if name == "gru4rec_plus" else name
    with pytest.raises(ValueError, match=rf"{model_name} config key '{key}' must be {expected}, got {value!r}"):
        config.check()
    with pytest.raises(ConfigError, match=f"'{key}'"):   # at resolve time: a usage error before any run
        resolve(name, "synthetic_seq", [f"{key}={value}"])


def test_gru4rec_plus_is_the_bpr_max_recipe_with_2048_popularity_negatives():
    plain, plus = resolve("gru4rec", "synthetic_seq").model, resolve("gru4rec_plus", "synthetic_seq").model
    assert (plain.loss, plain.n_sample) == ("top1", 0)
    assert (plus.loss, plus.n_sample, plus.sample_alpha, plus.bpreg) == ("bpr-max", 2048, 0.5, 1.0)
    assert model_spec("gru4rec_plus").description.startswith("GRU4Rec+")


def test_gru4rec_plus_trains_on_its_own_recipe_and_says_so():
    """gru4rec_plus shares gru4rec's module, so its training recipe is a named preset its
    registry entry applies (``ModelSpec.preset``), after the module's PRESETS, with a source
    that names it; gru4rec trains on it only when asked (``--preset plus``)."""
    from recboard.models.gru4rec import NAMED_PRESETS

    recipe = NAMED_PRESETS[model_spec("gru4rec_plus").preset]["ml-1m"]
    plain, plus = resolve("gru4rec", "ml-1m"), resolve("gru4rec_plus", "ml-1m")
    for key, value in recipe.items():
        assert plus.get(key) == value and plus.sources[key] == "preset gru4rec_plus/ml-1m (plus)"
        assert "(plus)" not in plain.sources.get(key, "")
    asked = resolve("gru4rec", "ml-1m", preset="plus")
    assert {key: asked.get(key) for key in recipe} == recipe and asked.model.loss == "top1"
    assert resolve("gru4rec_plus", "ml-1m", ["epochs=3"]).train.epochs == 3   # --set still wins


@pytest.mark.parametrize("name", [name for name, spec in MODELS.items() if spec.preset])
def test_a_registry_recipe_names_a_preset_of_its_module(name):
    assert model_spec(name).preset in model_presets(name)


def tiny_catalog() -> ItemCatalog:
    """Items 1..8 seen in training, 9..12 never; three users."""
    return ItemCatalog("tiny", 12, np.array([0] + [3] * 8 + [0] * 4), n_users=3)


@pytest.mark.parametrize("name", BASELINES)
def test_scores_every_item_with_padding_minus_infinity_and_unseen_items_alike(name):
    torch.manual_seed(0)
    model = build(name, tiny_catalog()).eval()
    scores = model.score(SequenceBatch(torch.tensor([[0, 0, 1, 2, 3], [4, 5, 9, 6, 7]]), user=torch.tensor([0, 2])))
    assert scores.shape == (2, 13) and torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    assert (scores[:, 9:] == scores[:, [9]]).all()               # one shared row for unseen items
    assert model.item_vectors() is None and model.describe()["known_items"] == 8


@pytest.mark.parametrize("name", WITH_USERS)
def test_user_models_need_the_user_and_score_by_it(name):
    torch.manual_seed(0)
    model = build(name, tiny_catalog()).eval()
    seq = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    with pytest.raises(ValueError, match=f"{name} has a user embedding"):
        model.score(SequenceBatch(seq))
    scores = model.score(SequenceBatch(seq, user=torch.tensor([0, 1])))
    assert not torch.allclose(scores[0, 1:], scores[1, 1:])
    with pytest.raises(ValueError, match="n_users >= 1"):
        build(name, ItemCatalog("no users", 12, np.ones(13, dtype=np.int64)))


@pytest.mark.parametrize("name, reads", [("bpr_mf", 0), ("ncf", 0), ("fpmc", 1), ("caser", 5)])
def test_user_models_read_only_their_last_items(name, reads):
    """BPR-MF and NCF ignore the input, FPMC reads the last item, Caser the last L = 5."""
    torch.manual_seed(0)
    model = build(name, tiny_catalog()).eval()
    user = torch.tensor([1])
    seq = torch.tensor([[8, 7, 1, 2, 3, 4, 5, 6]])
    older = seq.clone()
    older[0, :-reads or None] = torch.tensor([3, 3, 3, 3, 3, 3, 3, 3])[:seq.size(1) - reads]
    assert torch.equal(model.score(SequenceBatch(older, user=user)), model.score(SequenceBatch(seq, user=user)))
    if reads:
        newer = seq.clone()
        newer[0, -reads] = 8
        assert not torch.equal(model.score(SequenceBatch(newer, user=user)), model.score(SequenceBatch(seq, user=user)))


def test_gru4rec_padding_width_does_not_change_scores():
    torch.manual_seed(0)
    model = build("gru4rec", tiny_catalog()).eval()
    narrow = model.score(SequenceBatch(torch.tensor([[6, 7]])))
    wide = model.score(SequenceBatch(torch.tensor([[0, 0, 0, 0, 6, 7]])))
    assert torch.allclose(narrow, wide, atol=1e-6)
    rows, lengths = right_aligned(torch.tensor([[0, 0, 4, 5], [1, 2, 3, 4]]))
    assert rows.tolist() == [[4, 5, 0, 0], [1, 2, 3, 4]] and lengths.tolist() == [2, 4]


def test_gru4rec_plus_bpr_max_is_the_official_formula():
    """gru4rec_pytorch.py's bpr_max_loss_with_elu on one mini-batch of 3 (no padding): ELU,
    softmax over the negatives, -ln sum s_j sigma(r_i - r_j) + bpreg * sum s_j r_j^2."""
    model = build("gru4rec_plus", tiny_catalog())
    scores = torch.tensor([[[0.5, -1.0, 2.0, 0.3], [0.1, 1.5, -0.2, 0.7], [1.0, 0.0, 0.4, -2.0]]])
    negative = ~torch.eye(3, 4, dtype=torch.bool)[None]
    elu = F.elu(scores[0], 0.5)
    hm = 1.0 - torch.eye(3, 4)
    e_x = torch.exp(elu * hm - (elu * hm).max(dim=1, keepdim=True)[0]) * hm
    softmax_scores = e_x / e_x.sum(dim=1, keepdim=True)
    target = torch.diag(elu)[:, None]
    expected = (-torch.log(torch.sum(torch.sigmoid(target - elu) * softmax_scores, dim=1) + 1e-24)
                + 1.0 * torch.sum(elu ** 2 * softmax_scores, dim=1))
    got = model.event_losses(scores[0], torch.arange(3), negative[0])
    assert torch.allclose(got, expected, atol=1e-6)


def test_negatives_outside_the_window():
    window = torch.tensor([[0, 0, 3, 7], [1, 2, 5, 9]])
    draws = torch.tensor([[[3, 4], [7, 0]], [[9, 9], [6, 1]]])
    assert outside(draws, window).tolist() == [[[False, True], [False, False]], [[False, False], [True, False]]]


def test_negatives_outside_the_users_training_items():
    """With ``skip_history`` a draw is kept only when the user never had it in training,
    also where the window does not show it; without, the window alone decides."""
    counts = np.array([0, 2, 1, 1, 1, 1])
    history = (np.array([0, 3, 4]), np.array([1, 2, 3, 1], dtype=np.int32))   # user 0: 1 2 3, user 1: 1
    catalog = ItemCatalog("toy", 5, counts, n_users=2, train_history=history)
    model = torch.nn.Module()
    model.register_buffer("item_to_row", torch.tensor([0, 1, 2, 3, 4, 5]))
    window = torch.tensor([[0, 3], [0, 1]])   # user 0's window lacks items 1 and 2
    draws = torch.tensor([[1, 2, 4], [2, 1, 4]])
    users = torch.tensor([0, 1])
    assert unseen(model, draws, window, users).tolist() == outside(draws, window).tolist() == [
        [True, True, True], [True, False, True]]
    model.register_buffer("history_keys", history_keys(catalog, model.item_to_row))
    assert unseen(model, draws, window, users).tolist() == [[False, False, True], [True, False, True]]
    with pytest.raises(ValueError, match="skip_history needs the users' training items"):
        history_keys(ItemCatalog("news", 5, counts, n_users=2), model.item_to_row)


@pytest.mark.parametrize("name", ["bpr_mf", "ncf", "caser"])
def test_skip_history_learns_and_keeps_the_history_out_of_checkpoints(name):
    model, pop = runner_metrics_vs_pop(name, ["device=cpu", "skip_history=true"])
    assert model["NDCG@10"] > max(4 * pop["NDCG@10"], pop["NDCG@10"] + 0.25), (model, pop)
    data = planted_data(n_users=50)
    net = build(name, data.catalog(), skip_history=True)
    assert len(net.history_keys) == sum(len(set(s.tolist())) for s in data.train_sequences())
    assert "history_keys" not in net.state_dict()   # rebuilt from the catalog when a checkpoint loads


def test_caser_trains_on_every_window_of_l_plus_t_items():
    """The presets make the harness's windows the original's examples: L + T = 8 items,
    one start per item; a shorter user gives one left-padded example."""
    from recboard.benchmarks.training.routes import window_sequences

    cfg = resolve("caser", "ml-1m")
    assert (cfg.max_len, cfg.train.window_step) == (8, 1)
    examples = window_sequences([np.arange(1, 11), np.arange(1, 5)], cfg.max_len, cfg.train.window_step)
    assert len(examples) == 3 + 1 and examples[-1].tolist() == [0, 0, 0, 0, 1, 2, 3, 4]


def test_click_sequences_carry_their_users_through_the_runner():
    """On MIND-style data a user model trains on click sequences and scores impressions,
    each by its own user (the runner would fail on a missing user)."""
    from recboard.benchmarks.training.runner import run

    result = run(resolve("bpr_mf", "synthetic_mind", ["device=cpu", "epochs=2", "max_steps_per_epoch=5"]),
                 tracking=False)
    assert 0.0 <= result.test_metrics["AUC"] <= 1.0


def sparse_model(name: str):
    """``name`` with ``sparse_updates`` on planted data: (model, its optimizer, windows, users)."""
    from recboard.benchmarks.training.optimizers import make_optimizer

    data = planted_data(n_users=120)
    cfg = resolve(name, "synthetic_seq", ["device=cpu", "sparse_updates=true"])
    torch.manual_seed(0)
    net = model_class(name)(cfg.model, data.catalog())
    return (net, make_optimizer(net, cfg, torch.device("cpu")), *windows(data, 20))


def test_bpr_mf_sparse_updates_learn_and_move_only_the_rows_a_batch_read():
    model, pop = runner_metrics_vs_pop("bpr_mf", ["device=cpu", "sparse_updates=true"])
    assert model["NDCG@10"] > max(4 * pop["NDCG@10"], pop["NDCG@10"] + 0.25), (model, pop)

    net, optimizer, seqs, users = sparse_model("bpr_mf")
    assert isinstance(optimizer, torch.optim.SparseAdam)
    before = net.user_embedding.weight.detach().clone()
    loss = net.loss(SequenceBatch(seqs[:8], user=users[:8]))
    loss.backward()
    assert net.user_embedding.weight.grad.is_sparse
    optimizer.step()
    moved = (net.user_embedding.weight.detach() != before).any(dim=1)
    assert moved[:8].all() and not moved[8:].any()


def test_gru4rec_sparse_updates_learn_with_lazy_tables_and_adamw_for_the_gru():
    """``sparse_updates`` on GRU4Rec: the item tables give sparse gradients and move only at the
    rows a batch read (SparseAdam), the GRU moves with AdamW, one optimizer whose state dict
    round-trips (checkpoints) and whose groups take the lr schedule; it still learns."""
    from recboard.benchmarks.training.optimizers import SparseDenseAdam, make_optimizer

    model, pop = runner_metrics_vs_pop("gru4rec", ["device=cpu", "sparse_updates=true"])
    assert model["NDCG@10"] > max(4 * pop["NDCG@10"], pop["NDCG@10"] + 0.25), (model, pop)

    net, optimizer, seqs, users = sparse_model("gru4rec")
    assert isinstance(optimizer, SparseDenseAdam)
    assert len(optimizer.param_groups) == 3   # the tables' group, then AdamW's two
    batch = seqs[:4]
    table, gru = net.Wy.weight.detach().clone(), net.gru.weight_hh_l0.detach().clone()
    net.loss(SequenceBatch(batch, user=users[:4])).backward()
    assert net.Wy.weight.grad.is_sparse and not net.gru.weight_hh_l0.grad.is_sparse
    optimizer.step()
    moved = (net.Wy.weight.detach() != table).any(dim=1)
    read = torch.zeros_like(moved)
    read[net.item_to_row[batch[batch != 0]]] = True
    assert moved[read].all() and not moved[~read].any()
    assert not torch.equal(net.gru.weight_hh_l0.detach(), gru)

    again = make_optimizer(net, resolve("gru4rec", "synthetic_seq", ["sparse_updates=true"]), torch.device("cpu"))
    again.load_state_dict(optimizer.state_dict())
    assert again.state_dict()["sparse"]["state"].keys() == optimizer.state_dict()["sparse"]["state"].keys()
    assert len(again.state_dict()["dense"]["state"]) == len(optimizer.state_dict()["dense"]["state"]) > 0


def test_sparse_updates_refuse_weight_decay_by_name():
    from recboard.benchmarks.training.runner import make_optimizer
    cfg = resolve("bpr_mf", "synthetic_seq", ["device=cpu", "sparse_updates=true", "weight_decay=0.01"])
    net = model_class("bpr_mf")(cfg.model, planted_data(n_users=20).catalog())
    with pytest.raises(ConfigError, match="weight_decay=0.01"):
        make_optimizer(net, cfg, torch.device("cpu"))
