"""Throughput of the sequential models, fast path vs plain path, in one process.

Fast path: bf16 autocast (CUDA), ``scaled_dot_product_attention``, fused AdamW (what
``bench run`` uses) plus TF32 for the float32 output layer. Plain path: fp32, the
explicit-softmax (eager) attention, the single-tensor AdamW loop. Both train on the same synthetic ML-1m-shaped data (6,040 users, 3,416 items,
long-tailed lengths and popularity) cut into the runner's ``max_len`` windows, and both time
a full-ranking evaluation pass over all users (scores for every item, the user's seen items
masked, top-10).

    python -m recboard.benchmarks.speed.sequential --device cuda
    python -m recboard.benchmarks.speed.sequential --device cpu --n-users 300 --n-items 500 \\
        --max-len 50 --batch-size 32 --steps 5
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

MODELS = ("bert4rec", "sasrec")


def synthetic_ml1m(n_users: int, n_items: int, seed: int = 0):
    """Sequences shaped like ML-1m: lengths log-normal around a median of ~96 (min 20),
    items drawn without repeats from a Zipf-like popularity."""
    import numpy as np
    from recboard.datasets.batches import SequenceData, to_ragged

    rng = np.random.default_rng(seed)
    shortest = min(20, n_items)
    lengths = np.clip(rng.lognormal(np.log(96), 1.0, n_users).astype(np.int64), shortest, n_items)
    popularity = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    popularity /= popularity.sum()
    rows = [rng.choice(n_items, size=int(n), replace=False, p=popularity) + 1 for n in lengths]
    offsets, items = to_ragged(rows)
    return SequenceData("synthetic-ml1m-shaped", n_items, offsets, items,
                        stats={"users": n_users, "interactions": int(len(items))})


def model_config(name: str, max_len: int, hidden_size: int | None):
    """The model's ML-1m preset (model keys only) with ``max_len`` / ``hidden_size`` overridden."""
    from recboard.models.registry import model_class, model_presets

    cls = model_class(name)
    presets = model_presets(name)["default"]
    config = cls.config_class()
    keys = {f.name for f in dataclasses.fields(config)}
    for preset in (presets.get("*", {}), presets.get("ml-1m", {})):
        for key, value in preset.items():
            if key in keys:
                setattr(config, key, value)
    config.max_len = max_len
    if hidden_size:
        config.hidden_size = hidden_size
    return cls, config


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model, optimizer, windows, batch_size: int, steps: int, warmup: int, amp: bool, device) -> dict:
    """Sequences per second over ``steps`` optimizer steps after ``warmup`` untimed ones."""
    import torch
    from recboard.datasets.batches import SequenceBatch

    generator = torch.Generator().manual_seed(0)
    batches = [windows[torch.randint(len(windows), (batch_size,), generator=generator)].to(device)
               for _ in range(warmup + steps)]
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i, seq in enumerate(batches):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model.loss(SequenceBatch(seq))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # as the runner does
        optimizer.step()
    _sync(device)
    elapsed = time.perf_counter() - start
    out = {"train seq/s": steps * batch_size / elapsed, "final loss": loss.item()}
    if device.type == "cuda":
        out["train peak GiB"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return out


def time_evaluation(model, seq, seen, target, batch_size: int, amp: bool, device, k: int = 10) -> dict:
    """Users per second for one full-ranking pass (after one untimed warm-up batch)."""
    import torch
    from recboard.datasets.batches import SequenceBatch

    model.eval()
    hits = torch.zeros((), device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        model.score(SequenceBatch(seq[:batch_size]))
        _sync(device)
        start = time.perf_counter()
        for s in range(0, len(seq), batch_size):
            scores = model.score(SequenceBatch(seq[s:s + batch_size])).float()
            scores.scatter_(1, seen[s:s + batch_size], float("-inf"))  # padding column 0 included
            top = scores.topk(k, dim=1).indices
            hits += (top == target[s:s + batch_size, None]).any(dim=1).sum()
        _sync(device)
    elapsed = time.perf_counter() - start
    return {"eval users/s": len(seq) / elapsed, f"HR@{k}": float(hits) / len(seq)}


def run_path(name: str, data, windows, eval_tensors, args, device, fast: bool) -> dict:
    import torch

    cls, config = model_config(name, args.max_len, args.hidden_size)
    config.attention = "sdpa" if fast else "eager"
    amp = fast and device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast
    torch.manual_seed(args.seed)
    model = cls(config, data.catalog()).to(device)
    optimizer = (torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True) if fast
                 else torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False))
    result = time_training(model, optimizer, windows, args.batch_size, args.steps, args.warmup, amp, device)
    result.update(time_evaluation(model, *eval_tensors, args.eval_batch_size, amp, device))
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m recboard.benchmarks.speed.sequential", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default: cuda)")
    p.add_argument("--model", choices=(*MODELS, "all"), default="all")
    p.add_argument("--n-items", type=int, default=3416)
    p.add_argument("--n-users", type=int, default=6040)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--hidden-size", type=int, default=None, help="override the model's ML-1m preset")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--eval-batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=50, help="timed training steps per path")
    p.add_argument("--warmup", type=int, default=5, help="untimed training steps first")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for key in ("n_items", "n_users", "max_len", "batch_size", "eval_batch_size", "steps"):
        if getattr(args, key) < (2 if key == "max_len" else 1):
            p.error(f"--{key.replace('_', '-')} must be positive (max-len >= 2), got {getattr(args, key)}")
    return args


def main(argv=None) -> list:
    args = parse_args(argv)
    import numpy as np
    import torch
    from tabulate import tabulate
    from recboard.benchmarks.tasks import window_sequences
    from recboard.datasets.batches import left_pad, right_pad

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: no CUDA GPU available (use --device cpu with small sizes)")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device_name} | torch {torch.__version__} | users {args.n_users}, items {args.n_items}, "
          f"max_len {args.max_len}, batch {args.batch_size}, {args.steps} timed steps", flush=True)

    data = synthetic_ml1m(args.n_users, args.n_items, args.seed)
    windows = torch.as_tensor(window_sequences(data.train_sequences(), args.max_len))
    inputs, targets, _ = data.eval_examples("test")
    eval_tensors = (torch.as_tensor(left_pad(inputs, args.max_len), device=device),
                    torch.as_tensor(right_pad(inputs), device=device),
                    torch.as_tensor(np.asarray(targets), device=device))
    print(f"data: {int(data.lengths().mean())} items per user on average, {len(windows)} training windows, "
          f"{len(inputs)} evaluation users", flush=True)

    fast_label = "fast (bf16 autocast, sdpa, fused AdamW, TF32)" if device.type == "cuda" \
        else "fast (fp32 on CPU, sdpa, fused AdamW)"
    rows = []
    for name in MODELS if args.model == "all" else (args.model,):
        plain = run_path(name, data, windows, eval_tensors, args, device, fast=False)
        fast = run_path(name, data, windows, eval_tensors, args, device, fast=True)
        for measure in plain:
            ratio = fast[measure] / plain[measure] if plain[measure] else float("nan")
            higher_is_better = measure.endswith("/s")
            rows.append([name, measure, plain[measure], fast[measure],
                         f"{ratio:.2f}x" if higher_is_better or measure.endswith("GiB") else ""])
    print(tabulate(rows, headers=["model", "measure", "plain (fp32, eager, AdamW)", fast_label, "fast/plain"],
                   floatfmt=".4g"))
    return rows


if __name__ == "__main__":
    main()
