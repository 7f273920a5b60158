"""The conventions of the command-line tools researchers know: exit codes that tell usage
from failure, ``--json -``, a quiet broken pipe, ``--version``, help that names what exists,
runs replayed from a file or an MLflow run, and logs without progress-bar redraws."""
import json
import subprocess
import sys

import pytest

from recboard.benchmarks import cli

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--set", "epochs=1", "--set", "hidden_size=8", "--set", "max_len=8", "--set", "device=cpu"]


@pytest.fixture
def home(tmp_path, monkeypatch, fresh_store):
    monkeypatch.setenv("RECBOARD_HOME", str(tmp_path))
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_store(tmp_path))
    return tmp_path


def bench(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "recboard.benchmarks.cli", *args], capture_output=True,
                          text=True, timeout=240, **kwargs)


def test_version_and_help_name_what_exists(capsys):
    from recboard import __version__
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"recboard {__version__}"
    text = cli.build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    models = text.split("models: ")[1].split(" (or")[0].split(", ")
    datasets = text.split("datasets: ")[1].split(" (or")[0].split(", ")
    assert {"random", "pop", "bert4rec", "sasrec", "bpr_mf", "caser"} <= set(models)
    assert {"ml-1m", "beauty", "steam", "ml-20m"} <= set(datasets)
    assert "bench config --model M --dataset D" in text


def test_exit_code_2_is_usage_and_1_is_a_failed_job(home, capsys):
    assert cli.main(["run", "--model", "pop", "--dataset", "synthetic_seq", "--set", "nokey=1"]) == 2
    assert cli.main(["prepare", "--dataset", "ml-1m", "--data-dir", str(home / "nothing-here")]) == 1
    err = capsys.readouterr().err
    assert "unknown config key 'nokey'" in err and "not found" in err


def test_json_dash_is_json_on_stdout_and_the_table_on_stderr(home, capsys):
    assert cli.main(["run", "--model", "pop", "--dataset", "synthetic_seq", "--no-track", "--quiet",
                     "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"] == "pop" and "HR@10" in captured.err
    assert not (home / "-").exists()


def test_a_closed_pipe_ends_quietly(home):
    proc = subprocess.Popen([sys.executable, "-m", "recboard.benchmarks.cli", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()   # the reader is gone before anything was written, as with `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1 and "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.slow
def test_a_run_replays_from_its_mlflow_run_and_from_a_config_file(home, tmp_path):
    import os
    env = dict(os.environ)
    first = bench("run", "--model", "sasrec", "--dataset", "synthetic_seq", *TINY, "--set", "lr=0.004",
                  "--json", str(tmp_path / "a.json"), env=env)
    assert first.returncode == 0, first.stderr
    # the log says what was trained, and has no progress-bar redraws (not a terminal)
    set_line = next(line for line in first.stderr.splitlines() if line.startswith("  --set: "))
    assert {"epochs=1", "hidden_size=8", "max_len=8", "device=cpu", "lr=0.004"} == set(set_line[9:].split(", "))
    assert "\r" not in first.stderr
    a = json.loads((tmp_path / "a.json").read_text())
    again = bench("run", "--from-run", a["mlflow_run_id"], "--json", str(tmp_path / "b.json"), env=env)
    assert again.returncode == 0, again.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert (b["model"], b["dataset"], b["config"]["lr"]) == ("sasrec", "synthetic_seq", 0.004)
    assert b["metrics"] == a["metrics"]
    (tmp_path / "run.toml").write_text('model = "sasrec"\ndataset = "synthetic_seq"\n\n[config]\nepochs = 1\n'
                                       'hidden_size = 8\nmax_len = 8\ndevice = "cpu"\nlr = 0.004\n')
    from_file = bench("run", "--config", str(tmp_path / "run.toml"), "--no-track", "--json", "-", env=env)
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout)["metrics"] == a["metrics"]
    assert f"{tmp_path / 'run.toml'}: epochs=1" in from_file.stderr and "--set" not in from_file.stderr


def test_a_bad_config_file_is_a_one_line_usage_error(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"model": "pop", "dataset": ')
    assert cli.main(["run", "--config", str(tmp_path / "bad.json")]) == 2
    assert cli.main(["run", "--config", str(tmp_path / "absent.toml")]) == 2
    (tmp_path / "nomodel.json").write_text('{"epochs": 1}')
    assert cli.main(["run", "--config", str(tmp_path / "nomodel.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "bad.json: not valid JSON" in err[0] and "absent.toml: cannot read it" in err[1]
    assert "needs --model and --dataset" in err[2] and len(err) == 3
