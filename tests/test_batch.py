"""The GPU batch runner (``python -m recboard.benchmarks.gpu.batch``): jobs side by side, one
store each, a budget that ends late jobs KILLED, state that makes a second call resume, and
one merged leaderboard."""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from recboard.benchmarks.gpu import batch
from recboard.benchmarks.gpu.batch import Job


def _seed_stores(out: Path, jobs, fresh_store) -> None:
    """Pre-migrated stores, so the jobs skip MLflow's schema migrations (~7 s each)."""
    stores = out / "stores"
    stores.mkdir(parents=True)
    for job in jobs:
        fresh_store(stores)
        (stores / "mlflow.db").rename(stores / f"{job.name}.db")


def _runs(store: Path):
    from recboard.benchmarks.tracking.store import search_runs
    return search_runs("", tracking_uri=f"sqlite:///{store}")


def test_plan_runs_in_parallel_merges_and_resumes(tmp_path, fresh_store, capsys):
    jobs = batch.PLANS["smoke"]
    out = tmp_path / "out"
    _seed_stores(out, jobs, fresh_store)
    state = batch.run_plan(jobs, out, parallel=2, budget_s=300)
    assert {name: entry["status"] for name, entry in state.items()} == {"pop": "finished", "random": "finished"}
    # one store per job, holding only that job's runs: random's seed group is a parent and two seeds
    assert len(_runs(out / "stores" / "pop.db")) == 1
    assert sorted(_runs(out / "stores" / "random.db")["tags.recboard.kind"]) == ["group", "run", "run"]

    board = batch.merge(out)
    text = board.read_text()
    assert re.search(r"^\| random +\| this repo .*\| +2 \|", text, re.M)     # the two seeds folded
    assert re.search(r"^\| pop +\| this repo ", text, re.M)
    with tarfile.open(out / "batch.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"stores/pop.db", "stores/random.db", "logs/pop.log", "state.json", "LEADERBOARD.md"} <= names
    with tarfile.open(out / "examples.tar.gz") as archive:
        examples = archive.getnames()
    # pop's run and random's two seed runs saved their per-user test examples; no weights ride along
    assert len(examples) == 3 and all(name.endswith("/test_examples.npz") for name in examples)
    with tarfile.open(out / "records.tar.gz") as archive:   # one record per run or seed group, to commit
        records = sorted(archive.getnames())
    assert len(records) == 2 and all(n.startswith("records/synthetic_seq--") for n in records)

    # a second call on the same folder has nothing left to do
    before = json.loads((out / "state.json").read_text())
    again = batch.run_plan(jobs, out, parallel=2, budget_s=300)
    assert again == before
    assert len(_runs(out / "stores" / "pop.db")) == 1


def test_budget_stops_a_long_job_and_leaves_the_rest_for_later(tmp_path, fresh_store):
    long = Job("long", ("run", "--model", "sasrec", "--dataset", "synthetic_seq",
                        "--set", "epochs=100000", "--set", "patience=0"))
    later = Job("later", ("run", "--model", "pop", "--dataset", "synthetic_seq"))
    out = tmp_path / "out"
    _seed_stores(out, [long], fresh_store)
    state = batch.run_plan([long, later], out, parallel=1, budget_s=28, grace_s=10)
    assert state["long"]["status"] == "stopped by the budget"
    assert state["later"] == {"status": "not started"}
    runs = _runs(out / "stores" / "long.db")
    # SIGTERM unwinds bench like Ctrl-C: its run ends KILLED, never left RUNNING
    assert len(runs) == 1 and runs["status"].tolist() == ["KILLED"]


def test_cli_checks_its_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        batch.main(["smoke", "--only", "nope"])
    assert exit_info.value.code == 2
    assert "no job nope in plan smoke; its jobs: pop, random" in capsys.readouterr().err
    assert batch.main(["paper-table2", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    # every Table 2 / full-ranking group of the issue, three seeds each
    for model in ("bert4rec", "sasrec"):
        for dataset in ("ml-1m", "beauty"):
            for protocol in ("sampled-pop100", "full"):
                assert f"bench run --model {model} --dataset {dataset} --set protocol={protocol} --seeds 1,2,3" \
                    in printed


def test_damaged_state_names_the_file(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(batch.BatchError, match=r"state.json: line 1: not valid JSON"):
        batch.load_state(tmp_path)
