"""The speed paths give today's results on CPU: the chunked full-softmax loss of
SASRec / BERT4Rec (``loss_chunk``), NRMS-BERT's length buckets and bf16 frozen-layer cache
(``length_buckets``, ``cache_dtype``), and the speed benchmarks' FLOP / peak accounting."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from recboard.datasets.batches import SequenceBatch
from recboard.models.bert4rec import BERT4Rec, BERT4RecConfig
from recboard.models.encoders import PLMNewsEncoder
from recboard.models.nrms import NRMSConfig
from recboard.models.sasrec import SASRec, SASRecConfig

from sequence_helpers import planted_data

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = {"sasrec": (SASRec, SASRecConfig), "bert4rec": (BERT4Rec, BERT4RecConfig)}


class LogitRows(TorchDispatchMode):
    """For each width, the most rows of any 2-D tensor of that width an op produced while
    active, forward and backward alike (the autograd engine runs CPU backward on this
    thread, under this mode). ``rows[n_outputs]`` is how many positions' logits (or their
    gradient) existed at once: a deterministic stand-in for peak memory on a CPU, where
    torch keeps no allocator statistics."""

    def __init__(self):
        super().__init__()
        self.rows = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() == 2:
                self.rows[t.shape[1]] = max(self.rows.get(t.shape[1], 0), t.shape[0])
        return out


def loss_and_grads(name: str, loss_chunk: int, n_items: int = 300):
    cls, config_class = MODELS[name]
    data = planted_data(n_users=40, n_items=n_items)
    config = config_class(hidden_size=16, num_layers=1, num_heads=1, max_len=12, dropout=0.1, loss_chunk=loss_chunk)
    if name == "bert4rec":
        config.mask_ratio = 0.5   # enough predicted positions that the unchunked logits dominate
    torch.manual_seed(0)
    model = cls(config, data.catalog()).train()
    seq = torch.as_tensor([[0] * (12 - min(len(s), 12)) + list(s[-12:]) for s in data.train_sequences()[:32]])
    torch.manual_seed(1)   # the same dropout and cloze masks on both paths
    with LogitRows() as seen:
        loss = model.loss(SequenceBatch(seq))
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, seen.rows[model.unknown_row]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_chunked_softmax_gives_the_same_loss_and_gradients_with_a_chunk_of_logits_at_a_time(name):
    loss, grads, rows = loss_and_grads(name, loss_chunk=0)
    chunked_loss, chunked_grads, chunked_rows = loss_and_grads(name, loss_chunk=16)
    assert torch.allclose(loss, chunked_loss, atol=1e-5, rtol=0)
    assert grads.keys() == chunked_grads.keys() and len(grads) > 5
    for key in grads:
        assert torch.allclose(grads[key], chunked_grads[key], atol=1e-5, rtol=0), key
    # unchunked: the [N, n_known + 1] logits of all N predicted positions at once (N > 64);
    # chunked: never more than one 16-row chunk of them, in forward or backward
    assert rows > 64 and chunked_rows == 16


@pytest.mark.parametrize("name", sorted(MODELS))
def test_loss_chunk_is_a_checked_model_key(name):
    cls, config_class = MODELS[name]
    with pytest.raises(ValueError, match="loss_chunk"):
        cls(config_class(max_len=12, loss_chunk=-1), planted_data(n_users=10).catalog())


# ------------------------------------------------------------------ NRMS-BERT

WORDS = "the cat sat dogs bark at markets fall rise news day of tomorrow morning long title about a".split()
# lengths 1..18 words, so buckets of similar length are much narrower than the longest title
TITLES = ["", ""] + [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 18)) for i in range(40)]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random-weight 3-layer BERT with a word-level vocabulary, saved like a hub model."""
    from transformers import BertConfig, BertModel, BertTokenizer
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                                               + sorted(set(WORDS)))})
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert")
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def news_vectors(path, news, **keys):
    config = NRMSConfig(encoder=str(path), heads=2, head_dim=8, query_dim=8, title_len=24, **keys)
    torch.manual_seed(0)
    encoder = PLMNewsEncoder(config, TITLES).eval()   # no dropout: the paths see the same network
    vectors = encoder(news)
    vectors.square().sum().backward()
    return vectors.detach(), encoder.layers[2].output.dense.weight.grad.clone(), encoder


def test_length_buckets_and_bf16_cache_match_the_padded_path(tiny_bert):
    news = torch.randperm(len(TITLES) - 2, generator=torch.Generator().manual_seed(0)) + 2
    padded, padded_grad, encoder = news_vectors(tiny_bert, news)
    lengths = encoder.token_lengths[news].sort().values
    assert int(lengths.tensor_split(4)[0].max()) * 2 < int(lengths.max())   # the shortest bucket is narrower
    bucketed, bucketed_grad, _ = news_vectors(tiny_bert, news, length_buckets=4)
    assert torch.allclose(padded, bucketed, atol=1e-5, rtol=1e-4)
    assert torch.allclose(padded_grad, bucketed_grad, atol=1e-5, rtol=1e-4)

    # bf16 keeps 8 significant bits: cached states within ~0.4% each, news vectors within 1e-2
    bf16, _, bf16_encoder = news_vectors(tiny_bert, news, length_buckets=4, cache_dtype="bfloat16")
    assert bf16_encoder.frozen_cache.dtype == torch.bfloat16
    assert encoder.frozen_cache.dtype == torch.float32
    assert torch.allclose(padded, bf16, atol=1e-2, rtol=1e-2)   # measured: 1.3e-3 of |v| <= 1.3
    assert not torch.equal(padded, bf16)   # the looser tolerance is needed: the cache really is bf16


def test_bad_encoder_speed_keys_name_the_key(tiny_bert):
    for keys, name in (({"cache_dtype": "float16"}, "cache_dtype"), ({"length_buckets": -1}, "length_buckets")):
        with pytest.raises(ValueError, match=name):
            PLMNewsEncoder(NRMSConfig(encoder=str(tiny_bert), heads=2, head_dim=8, query_dim=8, **keys), TITLES)


# ------------------------------------------------------------------ benchmark accounting

def test_peak_table_and_utilisation():
    from recboard.benchmarks.speed.flops import dense_bf16_peak, utilisation
    assert dense_bf16_peak("NVIDIA H100 80GB HBM3") == 989.4
    assert dense_bf16_peak("NVIDIA H100 PCIe") == 756.0
    assert dense_bf16_peak("NVIDIA H200") == 989.4
    assert dense_bf16_peak("cpu") is None
    assert utilisation(2e12, 0.01, "NVIDIA H100 80GB HBM3") == ("200", "20.2%")
    assert utilisation(2e9, 0.01, "cpu") == ("0.2", "n/a")


def test_flop_count_of_a_matmul_step():
    from recboard.benchmarks.speed.flops import count_flops
    a = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(16, 4)
    # forward 2*8*16*4, backward (grad of a only) the same again
    assert count_flops(lambda: (a @ b).sum().backward()) == 2 * (2 * 8 * 16 * 4)


def test_sequential_benchmark_prints_the_chunked_path_beside_todays(capsys):
    from recboard.benchmarks.speed.sequential import main
    rows = main(["--device", "cpu", "--size", "tiny", "--model", "sasrec", "--n-users", "40", "--n-items", "80",
                 "--max-len", "12", "--batch-size", "8", "--steps", "2", "--warmup", "1", "--loss-chunk", "16"])
    table = {measure: values for _, measure, *values in rows}
    plain, fast, _, chunked, _ = table["final loss"]
    assert chunked == pytest.approx(fast, abs=1e-5)   # same seed and batches: the chunked loss is the same loss
    assert table["train TFLOP/step"][3] > table["train TFLOP/step"][1]   # backward recomputes each chunk's logits
    assert table["% of bf16 peak"][1] == "n/a"
    out = capsys.readouterr().out
    assert "fast + loss_chunk=16" in out and "chunked/fast" in out and "TFLOP/s" in out


def test_news_benchmark_prints_the_packed_path_beside_todays(capsys):
    from recboard.benchmarks.speed.news import main
    out = main(["--device", "cpu", "--size", "tiny", "--news", "300", "--train-impressions", "60",
                "--dev-impressions", "30", "--steps", "1", "--warmup", "0", "--history-len", "10",
                "--skip-naive", "--length-buckets", "4"])
    results = out["results"]
    assert list(results) == ["packed", "fast"]
    # the same batch in both: length buckets cut padding, so the packed step executes fewer FLOPs
    assert 0 < results["packed"]["step_flops"] < results["fast"]["step_flops"]
    assert results["packed"]["peak_pct"] == "n/a" and float(results["fast"]["tflop_s"]) > 0
    text = capsys.readouterr().out
    assert "fast/packed" in text and "length_buckets=4" in text and "% of dense bf16 peak" in text


def test_gpu_suite_script_lists_every_gpu_measurement_without_running_it(tmp_path):
    from recboard.benchmarks.speed.gpu_suite import MEASUREMENTS, main
    done = main(["--dry-run", "--out", str(tmp_path / "out")])
    assert [name for name, _, _ in done] == [m[0] for m in MEASUREMENTS]
    assert all(status is None and command[command.index("--device") + 1] == "cuda" for _, command, status in done)
    assert not (tmp_path / "out").exists()
    assert [name for name, _, _ in done[:2]] == ["sequential-ml-1m", "bert4rec-ml-1m-whole-preset"]


def test_gpu_suite_script_stays_within_its_budget(tmp_path):
    from recboard.benchmarks.speed.gpu_suite import BUDGET_S, SHORTEST_S, main
    assert BUDGET_S <= 560   # fits one 10-minute device call with room to spare
    # a budget too short for any measurement starts none of them
    done = main(["--budget", str(SHORTEST_S - 1), "--out", str(tmp_path / "out")])
    assert done and all(status == "skipped" for _, _, status in done)
    assert not (tmp_path / "out").exists()


def test_sequential_benchmark_prints_the_compiled_path_beside_todays(capsys):
    from torch._inductor import config as inductor

    from recboard.benchmarks.speed.sequential import main
    with inductor.patch(fallback_random=True):   # the eager random draws: the paths then see the same masks
        rows = main(["--device", "cpu", "--size", "tiny", "--model", "sasrec", "--n-users", "40", "--n-items", "80",
                     "--max-len", "12", "--hidden-size", "8", "--batch-size", "8", "--steps", "2", "--warmup", "1",
                     "--paths", "compiled"])
    table = {measure: values for _, measure, *values in rows}
    plain, fast, _, compiled, _ = table["final loss"]
    assert compiled == pytest.approx(fast, abs=1e-5)   # same seed and batches: compiling changes no value
    assert table["first step s"][3] > 2 * table["first step s"][1]   # its first step compiled the loss
    # the compiled graph computes logits for every slot, padding included: never fewer FLOPs
    assert table["train TFLOP/step"][3] >= table["train TFLOP/step"][1] > 0
    assert "fast + compile=default" in capsys.readouterr().out


def test_whole_preset_timing_trains_every_requested_epoch_through_the_trainer(capsys):
    from recboard.benchmarks.speed.whole_preset import main
    rows = main(["--device", "cpu", "--size", "tiny", "--model", "sasrec", "--epochs", "2", "--compile", "off",
                 "--set", "max_len=20", "--set", "hidden_size=8", "--set", "num_layers=1"])
    [(model, mode, epochs, train_s, wall_s, relative, best)] = rows
    assert (model, mode, epochs, relative) == ("sasrec", "off", 2, "1.00x")
    assert 0 < train_s <= wall_s and 0 < best <= 1
    assert "train s / first" in capsys.readouterr().out


def test_sampled_evaluation_benchmark_times_both_ways_and_they_agree():
    """``benchmarks/speed/sampled_eval.py`` prints the candidates-only pass beside the
    every-item pass; on tiny data both must give the same metrics (timings not asserted)."""
    from recboard.benchmarks.speed import sampled_eval

    rows = sampled_eval.main(["--size", "tiny", "--model", "ncf", "gru4rec"])
    assert [r[0] for r in rows] == ["ncf", "gru4rec"]
    assert all(r[4] is True and r[1] > 0 and r[2] > 0 for r in rows)


def test_sparse_updates_benchmark_times_dense_and_lazy_steps_side_by_side():
    from recboard.benchmarks.speed import sparse_updates

    rows = sparse_updates.main(["--size", "tiny", "--model", "gru4rec", "bpr_mf", "--steps", "2", "--rounds", "1"])
    assert [r[0] for r in rows] == ["gru4rec", "bpr_mf"]
    assert all(r[1] > 0 and r[2] > 0 and r[3] == pytest.approx(r[1] / r[2], rel=0.05) for r in rows)
