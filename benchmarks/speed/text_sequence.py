"""Text-aware BERT4Rec / SASRec against NRMS with the same title encoder: training and
evaluation speed, side by side in one run, on MIND-small-shaped data.

    python -m recboard.benchmarks.speed.text_sequence --device cuda --size bert-base
    python -m recboard.benchmarks.speed.text_sequence --device cpu --size tiny --news 2000 \\
        --train-impressions 400 --dev-impressions 200 --steps 4

Data and encoder are ``speed/news.py``'s: MIND-small's shape, and a random-weight BERT-base /
DistilBERT / tiny encoder (no download; speed does not depend on the weights). Each model
runs what ``bench run --dataset mind_small`` runs: its presets, its route's training batches
and evaluator, the fast path (dedupe, frozen-layer cache with ``--trainable-layers`` tuned,
encode-once evaluation), bf16 autocast + fused AdamW on CUDA:

* ``nrms``: ``nrms_bert`` with ``encoder=<the encoder>``, trained on clicks + ``npratio`` negatives;
* ``bert4rec`` / ``sasrec``: ``item_encoder=<the encoder>``, trained on users' click sequences.

An epoch is one pass over the same training impressions (NRMS: every click; the sequence
models: every user's click sequence), so seconds per training epoch is the comparison that
says how much slower text-aware training is; milliseconds per step are printed too, since
the models' batches differ. Seconds per epoch are extrapolated from ``--steps`` timed steps.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from recboard.benchmarks.speed.news import (endless, finish, mind_shaped_setup, peak_gib, print_progress,
                                            reset_peak, shape_args, sync, time_frozen_cache, time_training)

MODELS = {"nrms": ("nrms_bert", "encoder"), "bert4rec": ("bert4rec", "item_encoder"),
          "sasrec": ("sasrec", "item_encoder")}


def model_config(model: str, args, encoder_dir):
    """The resolved run configuration of ``model`` on mind_small, encoder and sizes from ``args``."""
    from recboard.benchmarks.config import resolve
    name, encoder_key = MODELS[model]
    sets = {encoder_key: str(encoder_dir), "title_len": args.title_len, "trainable_layers": args.trainable_layers,
            "eval_batch_size": args.eval_batch_size}
    if model == "nrms":
        sets.update(batch_size=args.batch_size, history_len=args.history_len, npratio=args.npratio)
    elif args.seq_batch_size:
        sets["batch_size"] = args.seq_batch_size
    return resolve(name, "mind_small", sets)


def measure(model: str, args, data, encoder_dir, device) -> dict:
    import torch
    from recboard.benchmarks.training.routes import route_for
    from recboard.models.registry import model_class

    cfg = model_config(model, args, encoder_dir)
    route = route_for(cfg.model_name, data)
    train_data = route.training_batches(cfg, device)
    evaluator = route.evaluator("test", cfg, device)
    torch.manual_seed(0)
    reset_peak(device)
    net = model_class(cfg.model_name)(cfg.model, route.catalog()).to(device)
    amp = device.type == "cuda"
    tower = getattr(net, "item_tower", None)
    out = {"model": model, "batch_size": cfg.train.batch_size, "steps_per_epoch": train_data.steps_per_epoch(),
           **time_frozen_cache(tower.news_encoder if tower else net.news_encoder, amp, device)}
    out.update(time_training(net, endless(train_data, np.random.default_rng(0)), args.steps, args.warmup, amp,
                             amp, device))
    out["epoch_s"] = out["step_s"] * out["steps_per_epoch"]
    out["train_peak_gib"] = peak_gib(device)
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    evaluator.evaluate(net, torch.bfloat16 if amp else None)
    sync(device)
    out["eval_s"] = time.perf_counter() - start
    out["eval_peak_gib"] = peak_gib(device)
    out["trainable_params"] = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return out


def report(args, meta: dict, results: dict) -> str:
    nrms = results["nrms"]
    lines = [f"Text-aware sequence models vs NRMS, same encoder: {meta['encoder']} "
             f"({meta['encoder_params'] / 1e6:.1f}M params, random weights, {args.trainable_layers} top layers "
             f"tuned), device {meta['device']}",
             f"data: {args.news:,} news (mean {meta['title_tokens']:.1f} tokens/title), "
             f"{args.train_impressions:,} train impressions = {meta['clicks']:,} clicks, "
             f"{args.dev_impressions:,} dev impressions; epoch times extrapolated from {args.steps} timed steps", ""]
    rows = [("seconds / training epoch", "epoch_s", "{:.1f}", 1), ("ms / training step", "step_s", "{:.1f}", 1000),
            ("training steps / epoch", "steps_per_epoch", "{:,}", 1), ("batch size", "batch_size", "{:,}", 1),
            ("seconds / full dev evaluation", "eval_s", "{:.1f}", 1),
            ("peak GPU memory, training (GiB)", "train_peak_gib", "{:.2f}", 1),
            ("peak GPU memory, evaluation (GiB)", "eval_peak_gib", "{:.2f}", 1)]
    text_models = [m for m in results if m != "nrms"]
    header = f"{'':34s}" + "".join(f"{m:>12s}" for m in results)
    lines.append(header + "".join(f"{m + '/nrms':>16s}" for m in text_models))
    for label, key, fmt, scale in rows:
        cells = ["—" if r.get(key) is None else fmt.format(r[key] * scale) for r in results.values()]
        ratios = [f"{results[m][key] / nrms[key]:.2f}x" if nrms.get(key) and results[m].get(key) is not None
                  else "—" for m in text_models]
        lines.append(f"{label:34s}" + "".join(f"{c:>12s}" for c in cells) + "".join(f"{r:>16s}" for r in ratios))
    lines.append("")
    for m in text_models:
        lines.append(f"{m} training epoch = {results[m]['epoch_s'] / nrms['epoch_s']:.2f}x NRMS's "
                     f"({results[m]['step_s'] / nrms['step_s']:.2f}x per step)")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    shape_args(parser)
    parser.add_argument("--seq-batch-size", type=int, default=0,
                        help="batch size of BERT4Rec / SASRec (default: their mind presets)")
    parser.add_argument("--models", default="bert4rec,sasrec", help="text sequence models to time beside NRMS")
    args = parser.parse_args(argv)
    models = ["nrms", *[m for m in args.models.split(",") if m]]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown --models {', '.join(unknown)}; choose from bert4rec, sasrec")
    with mind_shaped_setup(args) as (device, encoder_dir, data, meta):
        results = {}
        for model in models:
            results[model] = measure(model, args, data, encoder_dir, device)
            print_progress(model, results[model])
    return finish(args, meta, results, report(args, meta, results))


if __name__ == "__main__":
    main()
