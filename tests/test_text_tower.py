"""Text-aware BERT4Rec and SASRec (``item_encoder``, models/item_tower.py): unseen news get
real scores, ID and title vectors mix as documented, the NRMS speed-ups hold, the cold-start
synthetic data is cold, and bad input is one line that writes nothing. CPU, small sizes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recboard.benchmarks import cli
from recboard.benchmarks.config import resolve
from recboard.benchmarks.training.runner import run
from recboard.datasets.batches import ItemCatalog, SequenceBatch
from recboard.datasets.synthetic import generate_news
from recboard.models.bert4rec import BERT4Rec, BERT4RecConfig
from recboard.models.sasrec import SASRec, SASRecConfig

from test_encoders import write_glove

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WORDS = ["storm", "rain", "goal", "match", "market", "stocks", "the", "new"]
MODELS = {"bert4rec": (BERT4Rec, BERT4RecConfig), "sasrec": (SASRec, SASRecConfig)}
# the synthetic_mind_cold presets' small title encoder, with a tiny GloVe file
TINY = dict(hidden_size=16, num_layers=1, num_heads=2, max_len=8, dropout=0.0, text_heads=2, text_head_dim=4,
            text_query_dim=8, title_len=6, text_negatives=3)


@pytest.fixture
def glove_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    write_glove(tmp_path / "tiny_glove.txt", WORDS, dim=6)
    return str(tmp_path / "tiny_glove.txt")


def catalog(text: bool = True) -> ItemCatalog:
    """Items 1..8 seen in training, 9..12 never; item 9's title is item 1's."""
    titles = [""] + [f"{WORDS[i % 8]} {WORDS[(3 * i) % 8]} news" for i in range(1, 13)]
    titles[9] = titles[1]
    counts = np.array([0] + [2] * 8 + [0] * 4, dtype=np.int64)
    return ItemCatalog("tiny", 12, counts, titles if text else None)


def build(name: str, glove_path: str, **kw):
    cls, config_cls = MODELS[name]
    torch.manual_seed(0)
    return cls(config_cls(**{**TINY, "item_encoder": "glove", "glove_path": glove_path, **kw}), catalog())


# ------------------------------------------------------------------ the tower inside each model

@pytest.mark.parametrize("name", sorted(MODELS))
def test_unseen_items_get_their_own_scores_and_a_variant(name, glove_file):
    model = build(name, glove_file).eval()
    seq = SequenceBatch(torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]))
    with torch.no_grad():
        vectors = model.item_vectors()
        scores = model.score(seq, vectors)
    assert vectors.shape == (13, 16) and not vectors[0].any()          # row 0: padding, zero
    assert scores.shape == (2, 13) and torch.isinf(scores[:, 0]).all()
    unseen = scores[:, 9:]
    # no shared "unknown" score (items 9 and 11 have the same words, in another order)
    assert torch.isfinite(unseen).all() and len(torch.unique(unseen[0])) == 3
    assert torch.allclose(model.score(seq), scores)                  # without pre-encoded vectors: the same
    info = model.describe()
    assert info["variant"] == "glove titles" and info["known_items"] == 8 and info["unknown_items"] == 4
    # the ID model of the same catalogue: one shared score for the unseen items, and no variant
    id_model = MODELS[name][0](MODELS[name][1](**{**TINY, "text_negatives": 1024}), catalog()).eval()
    assert "variant" not in id_model.describe() and id_model.item_vectors() is None
    id_unseen = id_model.score(seq)[:, 9:]
    assert (id_unseen == id_unseen[:, :1]).all()


@pytest.mark.parametrize("id_embedding", [True, False])
def test_id_embedding_is_added_for_seen_items_only(glove_file, id_embedding):
    """Items 1 (seen) and 9 (unseen) share a title: their vectors differ by item 1's ID
    embedding, or not at all without ID embeddings."""
    tower = build("sasrec", glove_file, item_id_embedding=id_embedding).item_tower.eval()
    with torch.no_grad():
        vectors = tower.all_items()
        assert torch.allclose(vectors[9], tower.project(tower.news_encoder(torch.tensor([9])))[0])
        if id_embedding:
            assert torch.allclose(vectors[1] - vectors[9], tower.id_embedding(torch.tensor(1)), atol=1e-6)
            assert tower.id_embedding.num_embeddings == 8 + 1
        else:
            assert torch.allclose(vectors[1], vectors[9]) and tower.id_embedding is None


def test_encode_once_dedupe_and_chunked_evaluation_agree(glove_file):
    tower = build("bert4rec", glove_file).item_tower.eval()
    items = torch.tensor([[3, 3, 9, 0], [9, 1, 3, 12]])
    with torch.no_grad():
        deduped = tower(items)
        tower.dedupe = False
        plain = tower(items)
        assert torch.allclose(deduped, plain, atol=1e-6)
        assert torch.allclose(tower.all_items()[items], plain, atol=1e-6)
    seen = []
    tower.dedupe = True
    original = tower.news_encoder.forward
    tower.news_encoder.forward = lambda ids: seen.append(ids) or original(ids)
    tower(items)
    assert sorted(seen[0].tolist()) == [0, 1, 3, 9, 12]              # each distinct item once


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_reads_no_unseen_item_and_targets_point_at_themselves(name, glove_file):
    model = build(name, glove_file).train()
    encoded = []
    original = model.item_tower.news_encoder.forward
    model.item_tower.news_encoder.forward = lambda ids: encoded.append(ids) or original(ids)
    loss = model.loss(SequenceBatch(torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6], [0, 4, 5, 6, 7, 8, 1, 2]])))
    loss.backward()
    assert torch.isfinite(loss) and model.item_tower.project.weight.grad.abs().sum() > 0
    assert set(torch.cat(encoded).tolist()) <= set(range(9))          # pad + the 8 seen items
    # sampled softmax: the 3 distinct targets + at most text_negatives=3 more; a target's
    # column names the target's own vector
    targets = torch.tensor([2, 7, 7, 1])
    _, candidates, columns = model.item_tower.training_vectors(targets[None], targets)
    assert 3 <= candidates.shape[0] <= 6
    assert torch.allclose(candidates[columns], model.item_tower(targets), atol=1e-5)


def test_every_seen_item_as_candidates_with_negatives_minus_one(glove_file):
    model = build("sasrec", glove_file, text_negatives=-1).eval()
    targets = torch.tensor([5, 1, 8])
    _, candidates, columns = model.item_tower.training_vectors(targets[None], targets)
    assert candidates.shape[0] == 8 and torch.equal(model.item_tower.known_items[columns], targets)


def test_plm_item_encoder_from_a_local_directory(tmp_path):
    """A tiny random BERT saved like a hub model: frozen-layer cache, one tuned layer."""
    from transformers import BertConfig, BertModel, BertTokenizer
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                                  *WORDS, "news"])})
    torch.manual_seed(0)
    plm = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=32))
    plm.save_pretrained(tmp_path / "tinybert")
    tokenizer.save_pretrained(tmp_path / "tinybert")
    config = BERT4RecConfig(**{**TINY, "item_encoder": str(tmp_path / "tinybert"), "trainable_layers": 1})
    model = BERT4Rec(config, catalog())
    assert model.describe()["variant"] == "tinybert titles" and model.describe()["plm_frozen_layers"] == 1
    loss = model.loss(SequenceBatch(torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7]])))
    loss.backward()
    assert torch.isfinite(loss) and model.item_tower.news_encoder.frozen_cache is not None
    with torch.no_grad():
        assert model.eval().score(SequenceBatch(torch.tensor([[1, 2]])), model.item_vectors()).shape == (1, 13)


# ------------------------------------------------------------------ cold-start data, end to end

def test_cold_start_data_shows_no_test_news_in_training():
    data = generate_news(n_news=300, n_users=60, n_train=400, n_test=100, name="cold", cold_start=True)
    trained_on = set(np.concatenate([data.train.hist, data.train.cand]).tolist())
    test_news = set(data.test.cand.tolist())
    assert test_news and not test_news & trained_on
    assert not set(data.valid.cand.tolist()) & (trained_on | test_news)
    # every history field (what a test user's clicks start from) is made of training news
    assert set(np.concatenate([data.valid.hist, data.test.hist]).tolist()) <= trained_on
    assert data.stats["test_candidates_unseen_in_training"] == 1.0
    assert all(data.test.labels(i).sum() >= 1 for i in range(len(data.test)))
    assert data.valid.time.min() >= data.train.time.max() and data.test.time.min() > data.valid.time.max()
    warm = generate_news(n_news=300, n_users=60, n_train=400, n_test=100)
    assert set(warm.test.cand.tolist()) & set(warm.train.cand.tolist())   # the warm variant is unchanged


@pytest.fixture(scope="module")
def cold_data(tmp_path_factory):
    from recboard.datasets.registry import load_dataset
    return load_dataset("synthetic_mind_cold", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.slow
@pytest.mark.parametrize("name, epochs", [("bert4rec", 5), ("sasrec", 3)])
def test_titles_rank_news_nobody_clicked_and_ids_cannot(name, epochs, cold_data):
    """Through the runner, on synthetic_mind_cold's presets (measured, seed 42, one thread: text
    BERT4Rec AUC .86 after 5 epochs, text SASRec .92 after 3; ID models tie every candidate)."""
    text = run(resolve(name, "synthetic_mind_cold", ["device=cpu", "item_encoder=glove", f"epochs={epochs}"]),
               data=cold_data, tracking=False).test_metrics
    ids = run(resolve(name, "synthetic_mind_cold", ["device=cpu", "epochs=2"]), data=cold_data,
              tracking=False).test_metrics
    assert text["AUC"] >= 0.8, text
    assert 0.45 <= ids["AUC"] <= 0.6, ids
    assert text["nDCG@10"] > ids["nDCG@10"] + 0.15, (text, ids)


@pytest.mark.realdata
def test_text_bert4rec_end_to_end_on_the_real_mind_sample(tmp_path):
    from recboard.datasets.registry import load_dataset
    if not (SHARED / "mind-sample").exists():
        pytest.skip(f"{SHARED / 'mind-sample'} not available")
    data = load_dataset("mind_small", data_dir=SHARED / "mind-sample", cache_dir=tmp_path / "cache")
    cfg = resolve("bert4rec", "mind_small", ["device=cpu", "item_encoder=glove", "epochs=1", "max_steps_per_epoch=3",
                                             "batch_size=16", "hidden_size=32", "text_heads=4", "text_head_dim=8"])
    result = run(cfg, data=data, tracking=False)
    assert set(result.test_metrics) == {"AUC", "MRR", "nDCG@5", "nDCG@10"}
    assert 0.0 < result.test_metrics["AUC"] < 1.0


@pytest.mark.realdata
def test_ml1m_titles_and_genres_feed_the_tower(tmp_path, monkeypatch):
    from recboard.benchmarks.training.routes import route_for
    from recboard.datasets.registry import load_dataset
    if not (SHARED / "ml-1m").exists():
        pytest.skip(f"{SHARED / 'ml-1m'} not available")
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    data = load_dataset("ml-1m", data_dir=SHARED / "ml-1m", cache_dir=tmp_path / "cache")
    config = SASRecConfig(**{**TINY, "item_encoder": "glove", "title_len": 12})
    model = SASRec(config, route_for("sasrec", data).catalog())
    assert model.describe()["variant"] == "glove titles" and model.describe()["glove_coverage"] > 0.5
    loss = model.loss(SequenceBatch(torch.as_tensor(np.stack([data.sequence(u)[:8] for u in range(4)]))))
    assert torch.isfinite(loss)


def test_speed_benchmark_against_nrms_runs_on_cpu(capsys):
    from recboard.benchmarks.speed.text_sequence import main

    out = main(["--device", "cpu", "--size", "tiny", "--news", "300", "--train-impressions", "60",
                "--dev-impressions", "30", "--steps", "1", "--warmup", "0", "--history-len", "10",
                "--seq-batch-size", "16"])
    results = out["results"]
    assert list(results) == ["nrms", "bert4rec", "sasrec"]
    assert all(r["step_s"] > 0 and r["epoch_s"] > 0 and r["eval_s"] > 0 for r in results.values())
    assert results["bert4rec"]["batch_size"] == 16 and results["nrms"]["batch_size"] == 32
    text = capsys.readouterr().out
    assert "device cpu" in text and "bert4rec training epoch = " in text and "x NRMS's" in text


# ------------------------------------------------------------------ bad input: one line, nothing written

@pytest.fixture
def user_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RECBOARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RECBOARD_DEBUG", raising=False)
    (tmp_path / "beauty").mkdir()
    (tmp_path / "beauty" / "beauty.txt").write_text("".join(f"{u} {i}\n" for u in (1, 2) for i in (1, 2, 3, 4)))
    return tmp_path


# exit code 2: bad usage (a name that names nothing); 1: the work cannot be done (as for NRMS)
@pytest.mark.parametrize("model, dataset, sets, exit_code, error", [
    ("bert4rec", "synthetic_mind", ["item_encoder=glvoe"], 2,
     r"^unknown bert4rec item_encoder 'glvoe' \(did you mean 'glove'\?\); valid: glove, minilm, bert, distilbert, "
     r"a Hugging Face model name or a local directory \(cannot load the text encoder 'glvoe'\)$"),
    ("sasrec", "synthetic_mind", ["item_encoder=./no/such/model"], 2,
     r"^sasrec item_encoder './no/such/model' is not a directory; valid: glove, "),
    ("bert4rec", "synthetic_mind", ["item_encoder=no-such-org/no-such-model"], 1,
     r"^cannot load the text encoder 'no-such-org/no-such-model': not in the Hugging Face cache .*"
     r"`--set item_encoder=/path/to/dir`"),
    ("sasrec", "beauty", ["item_encoder=glove"], 1,
     r"^sasrec config key 'item_encoder' \('glove'\) reads item titles, and dataset 'beauty' has none; "
     r"drop item_encoder to train on item IDs$"),
    ("bert4rec", "synthetic_seq", ["item_encoder=glove", "text_negatives=0"], 2,   # out of range: usage
     r"^bert4rec config key 'text_negatives' must be >= 1 or -1 \(all seen items\), got 0$"),
], ids=["misspelt encoder", "missing encoder directory", "encoder not available offline", "dataset without text",
        "bad text_negatives"])
def test_bad_text_input_is_one_line_and_writes_nothing(model, dataset, sets, exit_code, error, user_env, capsys):
    import re
    out = user_env / "out"
    argv = ["run", "--model", model, "--dataset", dataset, "--json", str(out / "result.json"), "--quiet",
            "--checkpoint-dir", str(out / "checkpoints"), *[a for s in sets for a in ("--set", s)]]
    if dataset == "beauty":
        argv += ["--data-dir", str(user_env / "beauty")]
    assert cli.main(argv) == exit_code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bench run: error: ")]
    assert len(lines) == 1 and re.search(error, lines[0].removeprefix("bench run: error: ")), lines
    # the model is built before the MLflow run, the checkpoint and the result: none exists
    assert not out.exists() and not (user_env / "mlflow.db").exists() and not (user_env / "home").exists()


def test_describe_is_json_friendly_for_mlflow(glove_file):
    info = build("bert4rec", glove_file).describe()
    assert json.loads(json.dumps(info)) == info and info["trainable_params"] > 0
