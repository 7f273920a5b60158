"""The Python API: ``recboard.__version__``, ``recboard.run`` and ``recboard.leaderboard``,
as the README's example uses them; and ``bench config``, which prints what ``run`` would
train and where each value came from."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import recboard

PYPROJECT = Path(recboard.__file__).with_name("pyproject.toml")


def test_version_is_the_package_version_even_without_an_install(monkeypatch):
    from importlib import metadata

    declared = re.search(r'^version\s*=\s*"([^"]+)"', PYPROJECT.read_text(), re.MULTILINE).group(1)
    assert recboard.__version__ == metadata.version("recboard") == declared

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert recboard._version() == declared                 # a source tree: read from pyproject.toml


def test_import_is_light_and_subpackages_still_import():
    code = ("import sys, recboard; recboard.__version__; import recboard.leaderboard.render as lb; "
            "assert callable(recboard.leaderboard) and lb.build; "
            "heavy = {'torch', 'mlflow', 'optuna', 'polars', 'pandas', 'transformers'} & set(sys.modules); "
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_run_then_leaderboard(store):
    import os

    result = recboard.run("pop", "synthetic_seq", seed=7, device="cpu", experiment="from-python")
    assert result.model == "pop" and result.config["seed"] == 7 and 0 <= result.test_metrics["NDCG@10"] <= 1
    recorded = store.get_run(result.mlflow_run_id)
    assert store.get_experiment(recorded.info.experiment_id).name == "from-python"
    assert "MLFLOW_EXPERIMENT_NAME" not in os.environ           # the experiment was set for this run only

    text = recboard.leaderboard(datasets=["synthetic_seq"], records=None)
    assert "| pop " in text and result.mlflow_run_id[:8] in text
    frame = recboard.leaderboard("dataframe", records=None)     # this store's runs only
    assert frame["run_id"].tolist() == [result.mlflow_run_id]
    assert frame["NDCG@10"].tolist() == [pytest.approx(result.test_metrics["NDCG@10"])]
    assert recboard.leaderboard("dataframe", datasets=["ml-1m"], records=None).empty
    # by default the committed records come along, as with bench leaderboard
    assert len(recboard.leaderboard("dataframe", records=Path(__file__).parents[1] / "leaderboard" / "records")) > 1


def test_run_overrides_are_checked_config_keys():
    from recboard.benchmarks.config import ConfigError

    with pytest.raises(ConfigError, match="unknown config key 'epoch'.*did you mean 'epochs'"):
        recboard.run("pop", "synthetic_seq", epoch=3, tracking=False)


def test_bench_config_shows_each_value_and_its_source(capsys):
    from recboard.benchmarks import cli
    from recboard.benchmarks.config import resolve

    assert cli.main(["config", "--model", "sasrec", "--dataset", "synthetic_seq", "--set", "lr=0.01"]) == 0
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in capsys.readouterr().out.splitlines()[3:]}
    assert rows["lr"] == ["0.01", "--set"] and rows["seed"] == ["42", "default"]
    assert rows["metric"] == ["NDCG@10", "sequence defaults"]
    cfg = resolve("sasrec", "synthetic_seq", {"lr": 0.01})
    assert any(source.startswith("preset sasrec") for source in cfg.sources.values())
    assert rows == {key: [str(value) if value != "" else '""', cfg.sources.get(key, "default")]
                    for key, value in cfg.flat().items()}
