"""The contract every registered model obeys (``recboard.models.registry.Recommender``):
``Model(config, catalog)``, all four methods, tasks declared in the registry only, presets
reachable by name, and config keys that never shadow the trainer's. CPU, tiny sizes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recboard.datasets.batches import ImpressionBatch, ItemCatalog, SequenceBatch
from recboard.models.random_ import RandomConfig, RandomModel
from recboard.models.registry import (MODELS, TASKS, _source_literals, model_class, model_module, model_presets,
                                     model_spec)

pytestmark = pytest.mark.usefixtures("one_thread")

N_ITEMS = 12
WORDS = ["the", "news", "cat", "dog", "market", "rain"]
# shrinks any model to seconds on a CPU; each key is applied only where the config has it
SMALL = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_len": 8,
         "heads": 2, "head_dim": 4, "query_dim": 8, "title_len": 6}


@pytest.fixture
def glove_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny_glove.txt"
    path.write_text("".join(f"{w} " + " ".join(f"{x:.3f}" for x in rng.normal(size=4)) + "\n" for w in WORDS))
    return str(path)


def tiny_catalog() -> ItemCatalog:
    """Items 1..8 seen in training, 9..12 never (ID models share one row for those); two
    users (models with a user embedding read ``SequenceBatch.user``)."""
    counts = np.array([0] + [3] * 8 + [0] * 4, dtype=np.int64)
    titles = [""] + [f"{WORDS[i % 6]} {WORDS[(i * 5) % 6]} item" for i in range(1, N_ITEMS + 1)]
    return ItemCatalog("tiny", N_ITEMS, counts, titles, n_users=2)


def build(name: str, glove_path: str):
    cls = model_class(name)
    config = cls.config_class()
    keys = {f.name for f in dataclasses.fields(config)}
    settings = {**model_spec(name).overrides, **{k: v for k, v in SMALL.items() if k in keys}}
    if "encoder" in settings:
        # the Hugging Face encoders need downloaded weights (test_encoders.py covers them with
        # tiny local ones); what is checked here is the NRMS class, whatever its encoder
        settings.update(encoder="glove", glove_path=glove_path)
    for key, value in settings.items():
        setattr(config, key, value)
    return cls(config, tiny_catalog())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_class_and_registry_entry_declare_the_contract(name):
    cls, spec = model_class(name), model_spec(name)
    assert dataclasses.is_dataclass(cls.config_class)
    for method in ("loss", "score", "item_vectors", "describe"):
        assert callable(getattr(cls, method, None)), f"{name} has no {method}()"
    assert spec.tasks and set(spec.tasks) <= set(TASKS), spec.tasks
    assert not hasattr(cls, "tasks"), "tasks are declared in the registry only"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_presets_are_reachable_by_name_and_use_known_keys(name):
    from recboard.benchmarks.config import TrainConfig

    presets = model_presets(name)
    assert isinstance(presets, dict) and "default" in presets
    # `bench list` reads presets from the source without importing torch (its no-torch check
    # is in test_cli.py); what it reads must be what the module holds
    module = model_module(name)
    names = ("PRESETS", "NAMED_PRESETS")
    assert _source_literals(module.__name__, names) == {key: getattr(module, key, None) for key in names}
    known = {f.name for f in dataclasses.fields(model_class(name).config_class)}
    known |= {f.name for f in dataclasses.fields(TrainConfig)}
    for preset, scopes in presets.items():
        for scope, values in scopes.items():
            assert set(values) <= known, (preset, scope, set(values) - known)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_never_shadows_a_training_key(name):
    """``--set seed=7`` must reach the trainer: a model key of the same name would take the
    value instead (RandomConfig.seed once did). ``max_len`` is the one deliberate exception:
    the harness reads a model's own ``max_len`` for its input windows (RunConfig.max_len)."""
    from recboard.benchmarks.config import TrainConfig

    shared = ({f.name for f in dataclasses.fields(model_class(name).config_class)}
              & {f.name for f in dataclasses.fields(TrainConfig)})
    assert shared <= {"max_len"}, shared


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_built_on_a_catalog_serves_its_tasks(name, glove_file):
    torch.manual_seed(0)
    model = build(name, glove_file)
    assert isinstance(model.describe(), dict)
    tasks = model_spec(name).tasks
    seq = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 9, 6, 7]])
    users = torch.tensor([0, 1])   # what the harness hands every sequence batch
    candidates = torch.tensor([[3, 10, 0], [1, 2, 12]])            # column 0: the click
    impressions = ImpressionBatch(seq, candidates, torch.zeros(2, 3), candidates != 0)
    training_batch = SequenceBatch(seq, user=users) if "sequence" in tasks else impressions
    if any(p.requires_grad for p in model.parameters()):
        assert torch.isfinite(model.loss(training_batch))
    else:
        with pytest.raises(RuntimeError):   # counted, not trained
            model.loss(training_batch)
    model.eval()
    with torch.no_grad():
        vectors = model.item_vectors()
        if model_spec(name).module == "recboard.models.nrms":   # titles encoded once per evaluation
            assert vectors.shape[0] == N_ITEMS + 1
        else:
            assert vectors is None
        if "sequence" in tasks:
            assert model.score(SequenceBatch(seq, user=users), vectors).shape == (2, N_ITEMS + 1)
        if "impression" in tasks:
            assert model.score(impressions, vectors).shape == (2, 3)


def test_random_model_follows_the_run_seed():
    batch = SequenceBatch(torch.tensor([[1, 2, 3], [4, 5, 6]]))

    def scores_after(seed):
        torch.manual_seed(seed)   # what the runner does with --set seed=N before building the model
        return RandomModel(RandomConfig(), tiny_catalog()).score(batch)

    assert torch.equal(scores_after(7), scores_after(7))
    assert not torch.equal(scores_after(7), scores_after(8))

@pytest.mark.parametrize("name", sorted(n for n in MODELS if hasattr(model_class(n), "score_items")))
def test_score_items_equals_every_items_score_read_at_the_items(name, glove_file):
    """The sampled protocols rank candidates with ``score_items`` where a model has it; it must
    give the numbers ``score`` gives, unknown items (9..12, one shared row) included. Trained
    for a few steps first so the output rows and biases are not all at their initial values."""
    torch.manual_seed(0)
    model = build(name, glove_file)
    seq = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 9, 6, 7], [8, 1, 2, 3, 4]])
    batch = SequenceBatch(seq, user=torch.tensor([0, 1, 1]))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    items = torch.tensor([[3, 10, 1, 12], [7, 2, 9, 11], [5, 8, 4, 6]])
    model.eval()
    with torch.no_grad():
        every = model.score(batch).gather(1, items)
        chosen = model.score_items(batch, items)
    assert chosen.shape == items.shape
    assert torch.allclose(chosen, every, atol=1e-5)
    assert chosen.std() > 1e-4   # not a constant that would match trivially
