"""The compiled training path on CPU: the static-shape training losses of BERT4Rec / SASRec equal
the boolean-indexed ones they replaced, and ``compile=default`` trains the same trajectory as
``compile=off`` (the GPU timings are ``speed.sequential`` / ``speed.whole_preset``)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recboard.benchmarks import config as C
from recboard.benchmarks.training.checkpoint import FILE
from recboard.benchmarks.training.runner import run
from recboard.benchmarks.training.trainer import training_loss
from recboard.datasets.batches import PAD, SequenceBatch
from recboard.datasets.synthetic import generate_sequences
from recboard.models.bert4rec import BERT4Rec, BERT4RecConfig
from recboard.models.sasrec import SASRec, SASRecConfig

from sequence_helpers import planted_data

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = {"sasrec": (SASRec, SASRecConfig), "bert4rec": (BERT4Rec, BERT4RecConfig)}


def boolean_indexed_loss(model, seq):
    """The losses as they were before static shapes: the predicted positions picked with
    boolean indexing (their number depends on the batch), the mean over exactly those."""
    seq = seq[:, -model.config.max_len:]
    rows = model.item_to_row[seq]
    if isinstance(model, BERT4Rec):
        real = seq != PAD
        keys = torch.rand(seq.shape).masked_fill(~real, 2.0)
        predict = keys.argsort(dim=1).argsort(dim=1) < model.mask_count(real.sum(dim=1))[:, None]
        hidden, targets = model.encode(rows.masked_fill(predict, model.mask_row)), rows[predict] - 1
    else:
        predict = seq[:, :-1] != PAD
        hidden, targets = model.encode(rows[:, :-1]), rows[:, 1:][predict] - 1
    picked = hidden[predict]
    if picked.size(0) == 0:
        return hidden.sum() * 0.0
    return F.cross_entropy(model.output_logits(picked), targets)


def loss_and_grads(model, loss_fn, seq, seed):
    model.zero_grad()
    torch.manual_seed(seed)   # the same cloze keys and dropout draws on both paths
    loss = loss_fn(seq)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_chunk", [0, 16])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_static_shape_loss_equals_the_boolean_indexed_loss(name, loss_chunk):
    cls, config_class = MODELS[name]
    data = planted_data(n_users=40, n_items=200)
    config = config_class(hidden_size=16, num_layers=1, num_heads=1, max_len=12, dropout=0.1, loss_chunk=loss_chunk)
    if name == "bert4rec":
        config.mask_ratio = 0.3   # 4 slots a row; rows of 1..6 items have 1..2 masked, so some slots are empty
    torch.manual_seed(0)
    model = cls(config, data.catalog()).train()
    generator = torch.Generator().manual_seed(1)
    for seed in range(3):
        lengths = torch.randint(1, 13, (24,), generator=generator)
        lengths[0] = 0 if seed == 2 else lengths[0]   # one empty row: no positions to predict
        seq = torch.zeros(24, 12, dtype=torch.long)
        for r, n in enumerate(lengths.tolist()):
            seq[r, 12 - n:] = torch.randint(1, 201, (n,), generator=generator)
        old_loss, old_grads = loss_and_grads(model, lambda s: boolean_indexed_loss(model, s), seq, seed)
        new_loss, new_grads = loss_and_grads(model, lambda s: model.loss(SequenceBatch(s)), seq, seed)
        assert old_loss > 1.0 and torch.allclose(new_loss, old_loss, atol=1e-5, rtol=0), (seed, old_loss, new_loss)
        assert new_grads.keys() == old_grads.keys() and len(old_grads) > 5
        for key in old_grads:
            assert torch.allclose(new_grads[key], old_grads[key], atol=1e-5, rtol=0), (seed, key)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_batch_with_nothing_to_predict_has_zero_loss_and_gradient(name):
    cls, config_class = MODELS[name]
    model = cls(config_class(hidden_size=8, num_layers=1, num_heads=1, max_len=6), planted_data(n_users=10).catalog())
    seq = torch.zeros(3, 6, dtype=torch.long)
    seq[1, -1] = 5   # a single item: SASRec has no next item to predict, BERT4Rec masks it
    loss = model.loss(SequenceBatch(seq if name == "sasrec" else torch.zeros_like(seq)))
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters() if p.grad is not None)


def test_compiled_training_follows_the_uncompiled_trajectory(tmp_path):
    """compile=default against compile=off: the same losses, validation and test metrics.
    Inductor draws random numbers from its own generator unless ``fallback_random``, which
    makes the compiled graph draw the eager cloze keys / dropout masks, so the two runs
    differ only by float noise (fused kernels sum in another order; measured: losses within
    3e-7, metrics equal). 64 windows of batch 32: one batch shape, one compilation (on two
    CPU cores compiling BERT4Rec's step takes ~30-50 s; an epoch's smaller last batch
    would be a second graph, compiled once the same way)."""
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor

    data = generate_sequences(n_users=64, n_items=30, min_len=5, max_len=8, seed=0)
    sets = ["epochs=2", "patience=0", "hidden_size=8", "max_len=8", "batch_size=32", "device=cpu"]
    plain = run(C.resolve("bert4rec", "synthetic_seq", sets), data=data, tracking=False)
    torch._dynamo.reset()
    counters.clear()
    with inductor.patch(fallback_random=True):
        compiled = run(C.resolve("bert4rec", "synthetic_seq", sets + ["compile=default"]), data=data,
                       tracking=False, checkpoint_dir=tmp_path)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"], dict(counters)
    assert len(compiled.history) == len(plain.history) == 2
    for ours, theirs in zip(compiled.history, plain.history):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
        assert ours["valid/NDCG@10"] == pytest.approx(theirs["valid/NDCG@10"], abs=1e-4)
    assert compiled.test_metrics == pytest.approx(plain.test_metrics, abs=1e-4)
    # the loss was compiled, not the model: checkpoints keep the model's own keys
    saved = torch.load(tmp_path / FILE, weights_only=False)["model"]
    fresh = BERT4Rec(C.resolve("bert4rec", "synthetic_seq", sets).model, data.catalog())
    assert set(saved) == set(fresh.state_dict())


def test_a_bad_compile_value_names_the_choices():
    with pytest.raises(C.ConfigError, match="'compile' must be one of off, default, reduce-overhead, max-autotune"):
        C.resolve("sasrec", "synthetic_seq", ["compile=fast"])
    assert C.resolve("sasrec", "synthetic_seq", ["compile=reduce-overhead"]).train.compile == "reduce-overhead"
    assert C.resolve("sasrec", "synthetic_seq").train.compile == "off"


def test_compile_fails_clearly_where_it_cannot_work(monkeypatch, tmp_path):
    cpu = torch.device("cpu")
    model = SASRec(SASRecConfig(hidden_size=8, num_layers=1, num_heads=1, max_len=6), planted_data(n_users=10).catalog())
    with pytest.raises(C.ConfigError, match="Linear with this configuration cannot be compiled"):
        training_loss(torch.nn.Linear(2, 2), cpu, "default")   # a model that does not opt in
    assert training_loss(model, cpu, "off") == model.loss
    monkeypatch.setenv("PATH", str(tmp_path))   # no C++ compiler to be found
    with pytest.raises(RuntimeError, match="compile=default on CPU needs a C\\+\\+ compiler"):
        training_loss(model, cpu, "default")
