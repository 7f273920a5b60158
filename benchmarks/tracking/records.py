"""Records: the runs behind the leaderboard as small files committed to the repository, so a
number outlives the machine (and the MLflow store) it was measured on.

One record is one JSON file under ``leaderboard/records/``: a single run, or a seed group
(its parent run first, then every seed's run). Each run keeps what the leaderboard, the
significance marks and ``bench compare`` need and nothing more: its MLflow run name,
experiment, status, times, every tag, every param (the resolved config and where each value
came from), the latest value of every metric, and the per-test-example outcome in its
smallest lossless form:

* ranking protocols: the target's 0-based rank per test user (HR@k, NDCG@k and MRR at any
  k follow from it exactly; ``metrics.rank_metrics``);
* impressions: each impression's AUC, MRR, nDCG@5 and nDCG@10 (what the paired tests read).

Arrays are stored as base64 of zlib-compressed little-endian integers (ranks in 16 bits when
they fit) or float32; a Beauty run's 40,226 ranks take ~70-100 KB. No weights: ``bench eval`` needs the source run's store.

``export_records`` writes records from any MLflow store (``bench export``), ``import_records``
recreates the runs in any store (``bench import``; the MLflow UI and ``bench compare`` then
work on them), and ``read_record`` checks a file before anything uses it: a damaged or
hand-edited record (bad JSON, an unknown format version, a mean metric that disagrees with
its ranks) is refused in one line naming the file.

Why not mlflow-export-import: it copies whole runs with every artifact (weights included,
megabytes a run) into a folder layout per run, with no check that a file still agrees with
itself; a record here is one reviewable file of a few KB to ~100 KB, and verifiable.
"""
from __future__ import annotations

import base64
import json
import math
import re
import zlib
from pathlib import Path

import numpy as np

FORMAT = "recboard-record/1"
EXAMPLES = "test_examples.npz"
RANK_METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")
TOLERANCE = 1e-5   # a stored mean metric vs the mean recomputed from the ranks (float32 sums)


class RecordError(ValueError):
    """A record that cannot be used: named by its file, in one line."""


# --------------------------------------------------------------------------- arrays

def pack(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(values, dtype=dtype).tobytes(), 9)).decode("ascii")


def unpack(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype).copy()


def metrics_from_ranks(ranks: np.ndarray) -> dict:
    """Per-example HR@k / NDCG@k / MRR of 0-based target ranks, as ``metrics.rank_metrics``."""
    ranks = ranks.astype(np.float32)
    out = {}
    for k in (1, 5, 10):
        hit = (ranks < k).astype(np.float32)
        out[f"HR@{k}"] = hit
        if k > 1:
            out[f"NDCG@{k}"] = hit / np.log2(ranks + np.float32(2.0))
    out["MRR"] = np.float32(1.0) / (ranks + np.float32(1.0))
    return {k: v.astype(np.float64) for k, v in out.items()}


def encode_examples(examples: dict) -> dict:
    """A run's saved per-example test metrics -> the record's compact outcome."""
    rows = np.asarray(examples["row"], dtype=np.int64)
    if "MRR" in examples and "AUC" not in examples:
        ranks = np.rint(1.0 / np.asarray(examples["MRR"], dtype=np.float64)).astype(np.int64) - 1
        rebuilt = metrics_from_ranks(ranks)
        if all(np.allclose(rebuilt[m], examples[m], rtol=0, atol=1e-6) for m in RANK_METRICS if m in examples):
            # 16 bits hold a rank among up to 65,536 items (Beauty's 54k): half the bytes of int32
            dtype = "<u2" if len(ranks) and ranks.max() < 2 ** 16 and ranks.min() >= 0 else "<i4"
            return {"rows": pack(rows, "<i4"), "ranks": pack(ranks, dtype), "ranks_dtype": dtype}
    values = {k: pack(np.asarray(v, dtype=np.float64), "<f4") for k, v in examples.items() if k != "row"}
    return {"rows": pack(rows, "<i4"), "values": values}


def decode_examples(outcome: dict) -> dict:
    """The record's outcome -> {"row": int64, metric: float64}, as ``tracking.saved.load_examples``."""
    rows = unpack(outcome["rows"], "<i4").astype(np.int64)
    if "ranks" in outcome:
        ranks = unpack(outcome["ranks"], outcome.get("ranks_dtype", "<i4")).astype(np.int64)
        return {"row": rows, **metrics_from_ranks(ranks)}
    return {"row": rows, **{k: unpack(v, "<f4").astype(np.float64) for k, v in outcome["values"].items()}}


# --------------------------------------------------------------------------- reading

def read_record(path: Path) -> dict:
    """The record at ``path``, checked: JSON, its format version, every run's fields, and
    each run's mean test metrics against its per-example outcome."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise RecordError(f"record {path}: cannot read it ({err})") from None
    except json.JSONDecodeError as err:
        raise RecordError(f"record {path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise RecordError(f"record {path}: expected format {FORMAT!r}, found {found!r}")
    runs = record.get("runs")
    if not isinstance(runs, list) or not runs:
        raise RecordError(f"record {path}: expected a non-empty list 'runs'")
    for i, run in enumerate(runs):
        missing = [k for k in ("run_id", "tags", "params", "metrics", "status") if k not in run]
        if missing:
            raise RecordError(f"record {path}: run {i} lacks {', '.join(missing)}")
        if run.get("examples") is not None:
            _check_outcome(path, run)
    return record


def _check_outcome(path: Path, run: dict) -> None:
    try:
        examples = decode_examples(run["examples"])
    except (KeyError, ValueError, zlib.error, TypeError) as err:
        raise RecordError(f"record {path}: run {run['run_id']}'s per-example outcome is damaged ({err})") from None
    for name, values in examples.items():
        if name == "row":
            continue
        stored = run["metrics"].get("test/" + name.replace("@", "_at_"))
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        if stored is not None and not (math.isnan(mean) or abs(mean - float(stored)) <= TOLERANCE):
            raise RecordError(f"record {path}: run {run['run_id']}'s test {name} is {float(stored):.6f} but its "
                              f"per-example outcome gives {mean:.6f}: the record was edited or damaged")


def record_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("**/*.json")) if Path(folder).is_dir() else []


def record_name(run: dict) -> str:
    """File name of a record whose first run is ``run``: dataset, protocol, model[-variant]
    and the run id's first 8 characters, so two records never collide and a listing reads well."""
    tags = run["tags"]
    parts = [tags.get("recboard.dataset", "data"), tags.get("recboard.protocol", "protocol"),
             tags.get("recboard.model", "model") + (f"-{tags['recboard.variant']}" if tags.get("recboard.variant") else ""),
             run["run_id"][:8]]
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", "--".join(parts)) + ".json"


# --------------------------------------------------------------------------- export

def _run_entry(client, run, experiments: dict) -> dict:
    from recboard.benchmarks.tracking.saved import load_examples

    info, data = run.info, run.data
    if info.experiment_id not in experiments:
        experiments[info.experiment_id] = client.get_experiment(info.experiment_id).name
    saved = load_examples(info.run_id, client.tracking_uri) if data.tags.get("recboard.kind") != "group" else None
    return {"run_id": info.run_id, "run_name": info.run_name, "experiment": experiments[info.experiment_id],
            "status": info.status, "start_time": info.start_time, "end_time": info.end_time,
            "tags": dict(sorted(data.tags.items())), "params": dict(sorted(data.params.items())),
            "metrics": dict(sorted(data.metrics.items())),
            "examples": encode_examples(saved) if saved is not None else None}


def record_of(run_id: str, store: str) -> dict:
    """The record of ``run_id`` in ``store``: a seed group (named by its parent run or any of
    its seeds) with all its runs, or the single run."""
    from recboard.benchmarks.tracking.store import quiet_mlflow, search_runs, tag_filter

    client = quiet_mlflow().MlflowClient(store)
    run = client.get_run(run_id)
    group = run.info.run_id if run.data.tags.get("recboard.kind") == "group" else run.data.tags.get("recboard.group")
    runs = [run]
    if group:
        members = search_runs(tag_filter({"recboard.group": group}), store, output_format="list")
        runs = [client.get_run(group)] + sorted(members, key=lambda r: (r.info.start_time, r.info.run_id))
    if any(r.info.status != "FINISHED" for r in runs):
        raise RecordError(f"run {runs[0].info.run_id} ({'seed group' if group else 'run'}) did not finish: "
                          "only finished runs become records")
    experiments: dict = {}
    return {"format": FORMAT, "runs": [_run_entry(client, r, experiments) for r in runs]}


def export_records(run_ids: list, store: str, out_dir: Path) -> list[Path]:
    """Write the records of ``run_ids`` (runs or seed groups; empty: every finished run,
    re-scoring and group of the store, sweeps and tuning trials excluded) into ``out_dir``,
    each atomically. Returns the files written."""
    from recboard.benchmarks.tracking.store import search_runs, tag_filter
    from recboard.datasets.files import atomic_write_text

    if not run_ids:
        found = []
        for kind in ("group", "run", "eval"):
            found += search_runs(tag_filter({"recboard.kind": kind}, status="FINISHED"), store, output_format="list")
        run_ids = [r.info.run_id for r in found
                   if not r.data.tags.get("recboard.sweep") and not r.data.tags.get("recboard.group")]
    written, seen = [], set()
    for run_id in run_ids:
        record = record_of(run_id, store)
        head = record["runs"][0]["run_id"]
        if head in seen:
            continue
        seen.add(head)
        path = Path(out_dir) / record_name(record["runs"][0])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
        written.append(path)
    return written


# --------------------------------------------------------------------------- import

def import_records(paths: list, store: str) -> dict:
    """Recreate every run of each record in ``store``; {record path: [new run ids]}. Params,
    metrics and tags are the recorded ones; the ids a store gives its runs are its own, so
    ``mlflow.parentRunId`` and ``recboard.group`` point at the new parent run."""
    import tempfile

    from recboard.benchmarks.tracking.store import quiet_mlflow

    client = quiet_mlflow().MlflowClient(store)
    done = {}
    for path in paths:
        record = read_record(path)
        new_ids: dict = {}
        for run in record["runs"]:
            tags = {k: new_ids.get(v, v) if k in ("mlflow.parentRunId", "recboard.group") else v
                    for k, v in run["tags"].items()}
            experiment = client.get_experiment_by_name(run["experiment"])
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(run["experiment"])
            created = client.create_run(experiment_id, start_time=run["start_time"], tags=tags,
                                        run_name=run["run_name"])
            new_id = new_ids[run["run_id"]] = created.info.run_id
            _log_batch(client, new_id, run)
            if run.get("examples") is not None:
                with tempfile.TemporaryDirectory(prefix="recboard-import-") as folder:
                    file = Path(folder) / EXAMPLES
                    np.savez(file, **decode_examples(run["examples"]))
                    client.log_artifact(new_id, str(file))
            client.set_terminated(new_id, status=run["status"], end_time=run["end_time"])
        done[str(path)] = list(new_ids.values())
    return done


def _log_batch(client, run_id: str, run: dict) -> None:
    """Params and metrics in MLflow's batch limits (100 params, 1000 metrics per call)."""
    from mlflow.entities import Metric, Param

    params = [Param(k, str(v)) for k, v in run["params"].items()]
    metrics = [Metric(k, float(v), run["end_time"] or run["start_time"], 0) for k, v in run["metrics"].items()]
    for start in range(0, max(len(params), 1), 100):
        client.log_batch(run_id, params=params[start:start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
