"""Config range and choice checks, shared by every model's ``Config.check()``.

A model's config dataclass has a ``check()`` that raises ``ValueError`` naming the model, the
key, its value and what was expected. The harness calls it when the config is resolved
(``recboard.benchmarks.config.resolve``), so a bad value is a usage error (exit 2) before
any data is read or any run starts; the model's constructor calls it too, for code that
builds a model directly. Nothing here imports torch.
"""
from __future__ import annotations

from typing import Iterable


def require(model_name: str, config, rules: Iterable[tuple[str, bool, str]]) -> None:
    """``rules``: (key, whether its value is acceptable, what is expected); the first
    unacceptable one raises."""
    for key, ok, expected in rules:
        if not ok:
            raise ValueError(f"{model_name} config key {key!r} must be {expected}, got {getattr(config, key)!r}")


def is_fraction(value, *, one_allowed: bool = False) -> bool:
    """In [0, 1) (a dropout), or [0, 1] with ``one_allowed``."""
    return 0.0 <= value <= 1.0 if one_allowed else 0.0 <= value < 1.0


ATTENTION_IMPLS = ("sdpa", "eager")   # fused kernels | an explicit softmax, to check them against


def transformer_rules(config) -> list:
    """The keys BERT4Rec and SASRec share (hidden size, layers, heads, window, dropout, ...)."""
    return [
        ("hidden_size", config.hidden_size >= 1, "a positive integer"),
        ("num_layers", config.num_layers >= 1, "a positive integer"),
        ("num_heads", config.num_heads >= 1, "a positive integer"),
        ("hidden_size", config.num_heads < 1 or config.hidden_size % config.num_heads == 0,
         f"divisible by 'num_heads' ({config.num_heads})"),
        ("max_len", config.max_len >= 2, ">= 2"),
        ("dropout", is_fraction(config.dropout), "in [0, 1)"),
        ("ffn_size", config.ffn_size >= 0, ">= 0 (0 = default width)"),
        ("attention", config.attention in ATTENTION_IMPLS, f"one of {', '.join(ATTENTION_IMPLS)}"),
        ("loss_chunk", config.loss_chunk >= 0, ">= 0 (0 = the whole batch at once)"),
    ]


POOLINGS = ("attention", "cls", "mean")


def text_encoder_rules(config, heads_key: str, head_dim_key: str, query_key: str) -> list:
    """Keys of NRMS's title encoder, as NRMS (``heads``) or the text item tower
    (``text_heads``) names them."""
    return [
        ("title_len", config.title_len >= 1, "a positive integer"),
        (heads_key, getattr(config, heads_key) >= 1, "a positive integer"),
        (head_dim_key, getattr(config, head_dim_key) >= 1, "a positive integer"),
        (query_key, getattr(config, query_key) >= 1, "a positive integer"),
        ("pooling", config.pooling in POOLINGS, f"one of {', '.join(POOLINGS)}"),
        ("trainable_layers", config.trainable_layers >= -1, ">= -1 (-1 = all layers)"),
    ]
