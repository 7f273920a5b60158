"""Runs that survive and scale: resume after a kill, torchrun data parallelism, a real
MLflow tracking server. Each starts real processes, so they are marked slow (still in CI)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SASREC_TINY = ["--set", "epochs=4", "--set", "patience=0", "--set", "hidden_size=16", "--set", "max_len=12"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ, RECBOARD_CACHE=str(tmp_path / "cache"), RECBOARD_HOME=str(tmp_path / "home"),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def bench(*args, env, timeout=240):
    return subprocess.run([sys.executable, "-m", "recboard.benchmarks.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    env = env_for(tmp_path)
    straight = tmp_path / "straight.json"
    out = bench("run", "--model", "sasrec", "--dataset", "synthetic_seq", *SASREC_TINY, "--quiet",
                "--json", str(straight), env=env)
    assert out.returncode == 0, out.stderr

    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "recboard.benchmarks.cli", "run", "--model", "sasrec",
                             "--dataset", "synthetic_seq", *SASREC_TINY, "--quiet",
                             "--checkpoint-dir", str(ckpt)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    import torch
    deadline = time.time() + 180
    while time.time() < deadline:
        if (ckpt / "checkpoint.pt").exists():
            state = torch.load(ckpt / "checkpoint.pt", weights_only=False)
            if state["train_state"]["epoch"] >= 2:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, "the run finished before it could be interrupted"
    killed_at = torch.load(ckpt / "checkpoint.pt", weights_only=False)
    assert 2 <= killed_at["train_state"]["epoch"] < 4

    import mlflow
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    assert mlflow.get_run(killed_at["mlflow_run_id"]).info.status == "KILLED"

    resumed = tmp_path / "resumed.json"
    out = bench("run", "--model", "sasrec", "--dataset", "synthetic_seq", *SASREC_TINY, "--quiet",
                "--checkpoint-dir", str(ckpt), "--resume", "--json", str(resumed), env=env)
    assert out.returncode == 0, out.stderr
    a, b = json.loads(straight.read_text()), json.loads(resumed.read_text())
    assert b["mlflow_run_id"] == killed_at["mlflow_run_id"]
    assert b["metrics"] == pytest.approx(a["metrics"], abs=1e-6)
    assert [h["loss"] for h in b["history"]] == pytest.approx([h["loss"] for h in a["history"]], abs=1e-6)
    assert mlflow.get_run(b["mlflow_run_id"]).info.status == "FINISHED"


def test_resume_refuses_a_different_config(tmp_path):
    env = env_for(tmp_path)
    ckpt = tmp_path / "ckpt"
    args = ["run", "--model", "sasrec", "--dataset", "synthetic_seq", "--set", "epochs=1", "--set", "hidden_size=8",
            "--set", "max_len=8", "--quiet", "--no-track", "--checkpoint-dir", str(ckpt)]
    assert bench(*args, env=env).returncode == 0
    out = bench(*args[:-2], "--set", "lr=0.5", "--checkpoint-dir", str(ckpt), "--resume", env=env)
    assert out.returncode == 1 and "different configuration" in out.stderr


def test_torchrun_two_processes_match_one(tmp_path):
    env = env_for(tmp_path)
    common = ["--model", "sasrec", "--dataset", "synthetic_seq", "--set", "epochs=2", "--set", "dropout=0.0",
              "--set", "hidden_size=16", "--set", "max_len=12", "--quiet"]
    single = tmp_path / "single.json"
    out = bench("run", *common, "--json", str(single), env=env)
    assert out.returncode == 0, out.stderr
    double = tmp_path / "double.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "recboard.benchmarks.cli", "run", *common, "--json", str(double)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = json.loads(single.read_text()), json.loads(double.read_text())
    # same global batches and averaged gradients; only float summation order differs
    for name in ("NDCG@10", "HR@10", "MRR"):
        assert b["metrics"][name] == pytest.approx(a["metrics"][name], abs=0.02)
    import mlflow
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["recboard"])
    assert len(runs) == 2  # rank 1 logged nothing


def test_bench_run_against_a_real_mlflow_server(tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                               "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import urllib.request
        uri = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        env = env_for(tmp_path, MLFLOW_TRACKING_URI=uri)
        result = tmp_path / "r.json"
        out = bench("run", "--model", "pop", "--dataset", "synthetic_seq", "--quiet", "--json", str(result), env=env)
        assert out.returncode == 0, out.stderr
        run_id = json.loads(result.read_text())["mlflow_run_id"]
        import mlflow
        client = mlflow.MlflowClient(tracking_uri=uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.metrics["test/NDCG_at_10"] == pytest.approx(json.loads(result.read_text())["metrics"]["NDCG@10"])
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_two_tune_workers_share_one_study_exactly(tmp_path):
    env = env_for(tmp_path)
    storage = f"sqlite:///{tmp_path}/study.db"
    args = [sys.executable, "-m", "recboard.benchmarks.cli", "tune", "--model", "sasrec", "--dataset",
            "synthetic_seq", "--trials", "4", "--storage", storage, "--study", "shared", "--no-track",
            "--space", "lr=0.0005:0.005", "--set", "epochs=1", "--set", "hidden_size=8", "--set", "max_len=8",
            "--out-dir", str(tmp_path / "report")]
    workers = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
    import optuna
    study = optuna.load_study(study_name="shared", storage=storage)
    S = optuna.trial.TrialState
    finished = study.get_trials(states=(S.COMPLETE, S.PRUNED))
    assert len(finished) == 4
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    extra = [t for t in study.trials if t.state == S.FAIL]
    assert all(t.user_attrs.get("surplus") for t in extra) and len(extra) <= 1
    assert not study.get_trials(states=(S.RUNNING,))
