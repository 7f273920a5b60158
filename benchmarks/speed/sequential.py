"""Throughput of the sequential models: plain path, today's fast path, the chunked-softmax
path and the compiled paths, side by side in one process.

Fast path (today's ``bench run``): bf16 autocast (CUDA), ``scaled_dot_product_attention``,
fused AdamW plus TF32 for the float32 output layer. Plain path: fp32, the explicit-softmax
(eager) attention, the single-tensor AdamW loop. Chunked path: the fast path with
``loss_chunk`` (the full-softmax loss ``--loss-chunk`` positions at a time, so the logits
over all items never exist at once; MIND-large's ~161k news need it). Compiled paths: the
fast path with the loss through ``torch.compile`` as the trainer's ``compile`` key runs it
(``trainer.training_loss``): "compiled" is ``compile=default``, "graphs" (CUDA only)
``compile=reduce-overhead``, i.e. CUDA graphs; their "first step s" includes compilation.
They run by default on CUDA only (``--paths`` adds them on CPU, where compiling takes about
a minute and the timing says nothing about a GPU). All train on the same
synthetic data (``--size``: ML-1m's shape, 6,040 users and 3,416 items; MIND-large's
161,013 news with max_len 50, each given its own output row; or tiny for CPU), long-tailed
lengths and popularity, cut into the runner's ``max_len`` windows, and all time a
full-ranking evaluation pass over all users
(scores for every item, the user's seen items masked, top-10). Each path's training FLOPs
are counted over one step (``flops.py``) and shown as TFLOP/s and % of the device's dense
bf16 peak (n/a on CPU).

    python -m recboard.benchmarks.speed.sequential --device cuda
    python -m recboard.benchmarks.speed.sequential --device cuda --size mind-large
    python -m recboard.benchmarks.speed.sequential --device cpu --size tiny

The whole preset (every epoch, through the trainer) is timed by ``speed.whole_preset``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

MODELS = ("bert4rec", "sasrec")
PATHS = ("plain", "fast", "chunked", "compiled", "graphs")   # plain and fast always run: the ratios' bases
COMPILED_PATHS = {"compiled": "default", "graphs": "reduce-overhead"}   # path -> the trainer's compile key
# --size: defaults of n_users, n_items, max_len, batch_size, steps (each flag overrides its own)
SIZES = {"ml-1m": (6040, 3416, 200, 256, 50),
         # MIND-large: 161,013 news; users cut to 5,000 (the step's cost does not depend on how many)
         "mind-large": (5000, 161_013, 50, 256, 20),
         "tiny": (300, 500, 50, 32, 5)}


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


def time_training(model, loss_fn, optimizer, windows, batch_size: int, steps: int, warmup: int, amp: bool,
                  device) -> dict:
    """Sequences per second over ``steps`` optimizer steps after ``warmup`` untimed ones (the
    first of which, compilation included, is timed on its own)."""
    import torch
    from recboard.datasets.batches import SequenceBatch

    generator = torch.Generator().manual_seed(0)
    batches = [windows[torch.randint(len(windows), (batch_size,), generator=generator)].to(device)
               for _ in range(warmup + steps)]
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = first_step_s = time.perf_counter()
    for i, seq in enumerate(batches):
        if i in (1, warmup):
            _sync(device)
            first_step_s = time.perf_counter() - first_step_s if i == 1 else first_step_s
            start = time.perf_counter()
        torch.compiler.cudagraph_mark_step_begin()   # as the trainer does; a no-op without CUDA graphs
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(SequenceBatch(seq))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # as the runner does
        optimizer.step()
    _sync(device)
    elapsed = time.perf_counter() - start
    out = {"train seq/s": steps * batch_size / elapsed, "final loss": loss.item(),
           "first step s": first_step_s if warmup else "n/a"}
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


def run_path(name: str, data, windows, eval_tensors, args, device, path: str) -> dict:
    import numpy as np
    import torch
    from recboard.benchmarks.speed.flops import count_flops, utilisation
    from unittest import mock

    from recboard.benchmarks.training.trainer import training_loss
    from recboard.datasets.batches import SequenceBatch
    from recboard.models import layers

    fast = path != "plain"
    cls, config = model_config(name, args.max_len, args.hidden_size)
    config.attention = "sdpa" if fast else "eager"
    config.loss_chunk = args.loss_chunk if path == "chunked" else 0
    amp = fast and device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast
    torch.manual_seed(args.seed)
    catalog = data.catalog()
    if args.size == "mind-large":
        # every news its own output row, as if all 161k were clicked in training: the worst case
        # the chunked softmax is for (the synthetic users alone would leave most items unseen)
        catalog = dataclasses.replace(catalog, train_counts=np.maximum(catalog.train_counts, 1))
    model = cls(config, catalog).to(device)
    optimizer = (torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True) if fast
                 else torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False))
    loss_fn = training_loss(model, device, COMPILED_PATHS.get(path, "off"))
    result = time_training(model, loss_fn, optimizer, windows, args.batch_size, args.steps, args.warmup, amp, device)
    result["softmax width"] = model.unknown_row   # items with their own output row + the shared unknown row
    seq = windows[:args.batch_size].to(device)

    def one_step():   # counted eagerly, as the path computes it: a compiled graph keeps every slot
        compiled = path in COMPILED_PATHS
        with mock.patch.object(layers, "drops_ignored_rows", lambda: not compiled), \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            model.loss(SequenceBatch(seq)).backward()
    step_s = args.batch_size / result["train seq/s"]
    result["train TFLOP/step"] = count_flops(one_step) / 1e12
    result["train TFLOP/s"], result["% of bf16 peak"] = utilisation(result["train TFLOP/step"] * 1e12, step_s,
                                                                    args.device_name)
    result.update(time_evaluation(model, *eval_tensors, args.eval_batch_size, amp, device))
    del model, optimizer, loss_fn
    if path in COMPILED_PATHS:   # compiled code (and a CUDA graph pool) would keep the model alive
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m recboard.benchmarks.speed.sequential", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default: cuda)")
    p.add_argument("--model", choices=(*MODELS, "all"), default="all")
    p.add_argument("--size", choices=sorted(SIZES), default="ml-1m",
                   help="data shape: ml-1m | mind-large | tiny (CPU); sets the next five flags' defaults")
    p.add_argument("--n-users", type=int)
    p.add_argument("--n-items", type=int)
    p.add_argument("--max-len", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, help="timed training steps per path")
    p.add_argument("--hidden-size", type=int, default=None, help="override the model's ML-1m preset")
    p.add_argument("--eval-batch-size", type=int, default=512)
    p.add_argument("--loss-chunk", type=int, default=2048, help="the chunked path's loss_chunk")
    p.add_argument("--warmup", type=int, default=5, help="untimed training steps first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paths", nargs="+", choices=PATHS[2:], default=None,
                   help="paths besides plain and fast (default: chunked, plus compiled and graphs on CUDA)")
    args = p.parse_args(argv)
    if args.paths is None:
        args.paths = list(PATHS[2:]) if args.device.startswith("cuda") else ["chunked"]
    if "graphs" in args.paths and not args.device.startswith("cuda"):
        p.error("--paths graphs: CUDA graphs need --device cuda")
    for key, default in zip(("n_users", "n_items", "max_len", "batch_size", "steps"), SIZES[args.size]):
        if getattr(args, key) is None:
            setattr(args, key, default)
    for key in ("n_items", "n_users", "max_len", "batch_size", "eval_batch_size", "steps", "loss_chunk"):
        if getattr(args, key) < (2 if key == "max_len" else 1):
            p.error(f"--{key.replace('_', '-')} must be positive (max-len >= 2), got {getattr(args, key)}")
    return args


def main(argv=None) -> list:
    """Run, print the table and return its rows: [model, measure, plain, fast, fast/plain],
    then [value, value/fast] of each further path run (``--paths``, in ``PATHS`` order:
    chunked, compiled, graphs)."""
    args = parse_args(argv)
    import numpy as np
    import torch
    from tabulate import tabulate
    from recboard.benchmarks.training.routes import window_sequences
    from recboard.datasets.batches import left_pad, right_pad

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: no CUDA GPU available (use --device cpu with small sizes)")
    device_name = args.device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
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

    labels = {"plain": "plain (fp32, eager, AdamW)",
              "fast": "fast: today (bf16, sdpa, fused AdamW, TF32)" if device.type == "cuda"
              else "fast: today (fp32 on CPU, sdpa, fused AdamW)",
              "chunked": f"fast + loss_chunk={args.loss_chunk}",
              "compiled": "fast + compile=default", "graphs": "fast + compile=reduce-overhead (CUDA graphs)"}
    paths = [path for path in PATHS if path in ("plain", "fast", *args.paths)]
    bases = [(path, "plain" if path == "fast" else "fast") for path in paths[1:]]   # (new, old) of each ratio
    printed, rows = [], []
    for name in MODELS if args.model == "all" else (args.model,):
        results = {path: run_path(name, data, windows, eval_tensors, args, device, path) for path in paths}
        for measure in results["plain"]:
            values = [results[path][measure] for path in paths]
            ratios = [ratio(measure, results[new][measure], results[old][measure]) for new, old in bases]
            printed.append([name, measure, *(f"{v:.4g}" if isinstance(v, float) else v for v in values), *ratios])
            rows.append([name, measure, values[0], *(x for pair in zip(values[1:], ratios) for x in pair)])
    print(tabulate(printed, headers=["model", "measure", *(labels[p] for p in paths),
                                     *(f"{new}/{old}" for new, old in bases)], disable_numparse=True))
    return rows


def ratio(measure: str, new, old) -> str:
    """"1.23x" for rates and memory (higher-is-more), "" for the rest."""
    comparable = measure.endswith(("/s", "GiB")) and isinstance(new, float) and isinstance(old, float) and old
    return f"{new / old:.2f}x" if comparable else ""


if __name__ == "__main__":
    main()
