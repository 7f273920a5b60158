"""Models and datasets from outside recboard: ``--model package.module:Class``, entry points
of an installed package (``recboard.models`` / ``recboard.datasets``), and ``csv:PATH``
interaction files (same cache, same leave-one-out split, errors naming file and line)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from recboard.benchmarks import cli
from recboard.benchmarks.config import resolve
from recboard.datasets import beauty, interactions, plugins
from recboard.datasets.registry import dataset_spec, load_dataset
from recboard.models.registry import model_presets, model_spec

pytestmark = pytest.mark.usefixtures("one_thread")

# A complete plug-in model: next item from the last one. Used in-process and, unchanged,
# inside the package the entry-point test installs.
MODEL_SOURCE = '''
"""Bigram: scores the next item from the last one (a test plug-in)."""
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BigramConfig:
    dim: int = 8


PRESETS = {"*": {"dim": 6}}
NAMED_PRESETS = {"wide": {"*": {"dim": 12}}}


class Bigram(nn.Module):
    """next item from the last one (test plug-in)"""

    config_class = BigramConfig
    tasks = ("sequence",)

    def __init__(self, config, catalog):
        super().__init__()
        self.emb = nn.Embedding(catalog.n_items + 1, config.dim)

    def loss(self, batch):
        prev, nxt = batch.seq[:, :-1].reshape(-1), batch.seq[:, 1:].reshape(-1)
        keep = (prev > 0) & (nxt > 0)
        return nn.functional.cross_entropy(self.emb(prev[keep]) @ self.emb.weight.T, nxt[keep])

    def score(self, batch, item_vectors=None):
        return self.emb(batch.seq[:, -1]) @ self.emb.weight.T

    def item_vectors(self):
        return None

    def describe(self):
        return {"dim": self.emb.embedding_dim}
'''

DATASET_SOURCE = '''
"""Toy sequences from a plug-in package."""
TASK = "sequence"
DESCRIPTION = "toy sequences registered by an installed package"
PREPROCESS_VERSION = 1


def source_files(name, data_dir):
    return []


def build(name, data_dir, download):
    from recboard.datasets.synthetic import generate_sequences
    return generate_sequences(n_users=40, n_items=30, seed=3, name=name)
'''

FAST = ["--set", "epochs=1", "--set", "batch_size=32", "--set", "max_len=8", "--set", "device=cpu"]


def write(path: Path, text) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private cache; plug-in modules written under ``tmp_path/mods`` are importable."""
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    (tmp_path / "mods").mkdir()
    return tmp_path


# --------------------------------------------------------------------------- --model pkg.mod:Class

def test_model_by_module_and_class_resolves_presets_and_runs(home, capsys):
    write(home / "mods" / "my_recs" / "__init__.py", "")
    write(home / "mods" / "my_recs" / "bigram.py", MODEL_SOURCE)
    name = "my_recs.bigram:Bigram"
    spec = model_spec(name)
    assert spec.tasks == ("sequence",) and spec.description == "next item from the last one (test plug-in)"
    assert model_presets(name)["wide"] == {"*": {"dim": 12}}
    assert resolve(name, "synthetic_seq").model.dim == 6                       # PRESETS
    assert resolve(name, "synthetic_seq", preset="wide").model.dim == 12       # NAMED_PRESETS
    out = home / "result.json"
    assert cli.main(["run", "--model", name, "--dataset", "synthetic_seq", "--no-track", "--quiet",
                     "--json", str(out), *FAST]) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["model"] == name and result["config"]["dim"] == 6
    assert 0.0 < result["metrics"]["HR@10"] <= 1.0


@pytest.mark.parametrize("source, name, message", [
    (None, "no_such_module:Model", r"plug-in model 'no_such_module:Model': cannot import module 'no_such_module'"),
    ("import not_installed_dep\n", "rbt_broken:Model", r"cannot import module 'rbt_broken' \(No module named 'not_installed_dep'\)"),
    ("raise RuntimeError('boom')\n", "rbt_boom:Model", r"importing module 'rbt_boom' failed \(RuntimeError: boom\)"),
    ("x = 1\n", "rbt_plain:Model", r"module 'rbt_plain' has no class 'Model'"),
    (MODEL_SOURCE.replace('    tasks = ("sequence",)\n', ""), "rbt_untasked:Bigram",
     r"rbt_untasked:Bigram needs a class attribute tasks, a non-empty tuple .* got None"),
    (MODEL_SOURCE.replace('("sequence",)', '("ranking",)'), "rbt_badtask:Bigram", r"got \('ranking',\)"),
    (MODEL_SOURCE.replace("def describe", "def _describe"), "rbt_nodescribe:Bigram",
     r"rbt_nodescribe:Bigram lacks the contract method\(s\) describe"),
    (MODEL_SOURCE.replace("    config_class = BigramConfig\n", ""), "rbt_noconfig:Bigram", r"needs a class attribute config_class"),
    (None, "mod.only:", r"expected package.module:Class, got 'mod.only:'"),
], ids=["missing", "missing-dep", "raises", "no-class", "no-tasks", "bad-tasks", "no-describe", "no-config",
        "no-class-name"])
def test_broken_plugin_model_is_a_one_line_error(home, capsys, source, name, message):
    if source is not None:
        write(home / "mods" / f"{name.split(':')[0]}.py", source)
    assert cli.main(["run", "--model", name, "--dataset", "synthetic_seq", "--no-track"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bench run: error: "), err
    assert re.search(message, err), err


def test_module_in_the_working_directory_is_found(tmp_path, monkeypatch):
    # `bench` as an installed script does not put the working directory on sys.path
    write(tmp_path / "cwd_recs.py", MODEL_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert model_spec("cwd_recs:Bigram").tasks == ("sequence",)
    assert sys.path[-1] == str(tmp_path)            # appended: never shadows an installed package


# --------------------------------------------------------------------------- an installed plug-in package

@pytest.mark.slow
def test_installed_package_registers_model_and_dataset_via_entry_points(tmp_path):
    pytest.importorskip("setuptools")
    pkg = tmp_path / "toyplug"
    write(pkg / "pyproject.toml", textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "recboard-toyplug"
        version = "0.1.0"

        [project.entry-points."recboard.models"]
        toy_bigram = "toyplug.model:Bigram"

        [project.entry-points."recboard.datasets"]
        toy_seq = "toyplug.data"

        [tool.setuptools]
        packages = ["toyplug"]
    """))
    write(pkg / "toyplug" / "__init__.py", "")
    write(pkg / "toyplug" / "model.py", MODEL_SOURCE)
    write(pkg / "toyplug" / "data.py", DATASET_SOURCE)
    site = tmp_path / "site"
    # offline and quick: no index, no build isolation (setuptools is already here), no deps
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                          "--no-build-isolation", "--disable-pip-version-check", "--target", str(site), str(pkg)],
                         capture_output=True, text=True, timeout=240)
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "RECBOARD_CACHE": str(tmp_path / "cache")}

    listing = subprocess.run(
        [sys.executable, "-c", "import sys; from recboard.benchmarks import cli; cli.main(['list']); "
                               "print('imported' if 'toyplug' in sys.modules else 'not imported')"],
        capture_output=True, text=True, env=env, timeout=120)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert any(line.split()[:3] == ["toy_bigram", "[plug-in]", "toyplug.model:Bigram"] for line in lines)
    assert any(line.split()[:3] == ["toy_seq", "[plug-in]", "toyplug.data"] for line in lines)
    assert lines[-1] == "not imported"                       # listed from metadata only

    out = tmp_path / "result.json"
    run = subprocess.run([sys.executable, "-m", "recboard.benchmarks.cli", "run", "--model", "toy_bigram",
                          "--dataset", "toy_seq", "--no-track", "--quiet", "--json", str(out), *FAST],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert (result["model"], result["dataset"]) == ("toy_bigram", "toy_seq")
    assert result["dataset_stats"]["users"] == 40 and result["config"]["dim"] == 6   # the plug-in's PRESETS
    assert (tmp_path / "cache").glob("toy_seq-*").__next__().is_dir()                # the same cache


def test_entry_point_dataset_must_declare_its_task(home, monkeypatch):
    write(home / "mods" / "ep_data.py", DATASET_SOURCE.replace('TASK = "sequence"\n', ""))
    write(home / "mods" / "ep_data_ok.py", DATASET_SOURCE)
    write(home / "mods" / "ep_data_half.py", 'TASK = "sequence"\n')
    monkeypatch.setattr(plugins, "entry_point_targets",
                        lambda group: {"ep": "ep_data", "ep_ok": "ep_data_ok", "ep_half": "ep_data_half",
                                       "sasrec_data": "x"} if group == plugins.DATASET_GROUP else {})
    with pytest.raises(ValueError, match=r"plug-in dataset 'ep' .*must set TASK to one of sequence, impression"):
        dataset_spec("ep")
    with pytest.raises(ValueError, match=r"'ep_half' .*lacks build, source_files, PREPROCESS_VERSION"):
        dataset_spec("ep_half")
    spec = dataset_spec("ep_ok")
    assert (spec.task, spec.description) == ("sequence", "toy sequences registered by an installed package")
    assert load_dataset("ep_ok").n_users == 40
    with pytest.raises(ValueError, match=r"unknown dataset 'ep_okk' \(did you mean 'ep_ok'\?\).*csv:PATH"):
        dataset_spec("ep_okk")
    assert dataset_spec("ml-1m").module == "recboard.datasets.movielens"       # built-ins first


# --------------------------------------------------------------------------- csv: datasets

def amazon_rows() -> list:
    """Needs three passes of 5-core filtering (see test_datasets' Amazon test)."""
    rows = []
    for u in "abcde":
        rows += [(u, f"i{k}", 10 * k if u != "a" else 100 - k) for k in range(1, 6)]
    return rows + [("f", f"i{k}", k) for k in (1, 2, 3, 4, 6)] + [(u, "i6", 1) for u in "ghij"]


def test_csv_kcore_matches_the_builtin_five_core_and_split(home):
    write(home / "amazon" / "ratings_Beauty.csv", "".join(f"{u},{i},5.0,{t}\n" for u, i, t in amazon_rows()))
    builtin = beauty.build("beauty", home / "amazon", download=False)
    name = f"csv:{home / 'amazon' / 'ratings_Beauty.csv'}?header=0&user=1&item=2&time=4&kcore=5"
    ours = load_dataset(name)
    np.testing.assert_array_equal(ours.offsets, builtin.offsets)
    np.testing.assert_array_equal(ours.items, builtin.items)
    assert ours.raw_item_ids == builtin.raw_item_ids and ours.stats["dropped_interactions"] == 9
    for split in ("valid", "test"):
        a, b = ours.eval_examples(split), builtin.eval_examples(split)
        assert [list(x) for x in a[0]] == [list(x) for x in b[0]] and list(a[1]) == list(b[1])
    without = load_dataset(name.replace("&kcore=5", ""))
    assert without.n_users == 10 and without.stats["filtering"] == "none"


def test_csv_header_names_dates_integer_ids_and_leave_one_out(home):
    # user 7 in time order: items 9, 10, 100 (a date tie keeps file order); ids sort as numbers
    f = write(home / "plays.tsv", "ts\tuid\tsong\n2021-03-02\t7\t100\n2021-03-01 10:00:00\t7\t9\n"
                                  "2021-03-01T12:00:00\t7\t10\n2021-03-01\t8\t9\n2021-03-02\t8\t10\n"
                                  "2021-03-03\t8\t100\n\n")
    data = load_dataset(f"csv:{f}?user=uid&item=song&time=ts")
    assert dataset_spec(f"csv:{f}?user=uid&item=song&time=ts").task == "sequence"
    assert data.raw_item_ids == ["<pad>", 9, 10, 100]
    assert [data.raw_item_ids[i] for i in data.sequence(0)] == [9, 10, 100]
    inputs, targets, _ = data.eval_examples("test")
    assert [list(x) for x in inputs] == [[1, 2], [1, 2]] and list(targets) == [3, 3]
    ids = write(home / "x.csv", "user,item,timestamp\nu1,007,1\nu1,7,2\n")
    text_ids = load_dataset(f"csv:{ids}")
    assert text_ids.raw_item_ids == ["<pad>", "007", "7"]          # not merged by a lossy cast


def test_csv_uses_the_fingerprinted_cache(home, monkeypatch):
    f = write(home / "events.csv", "user,item,timestamp\n" + "".join(f"u{u},i{i},{i}\n" for u in range(3)
                                                                     for i in range(4)))
    first = load_dataset(f"csv:{f}")
    calls = []
    monkeypatch.setattr(interactions, "read_interactions", lambda src: calls.append(src))
    again = load_dataset(f"csv:{f}")                              # from the cache: nothing parsed
    assert calls == [] and again.stats["fingerprint"] == first.stats["fingerprint"]
    assert Path(again.stats["cache_path"]).name.startswith("csv-events-")
    monkeypatch.undo()
    monkeypatch.setenv("RECBOARD_CACHE", str(home / "cache"))
    other = load_dataset(f"csv:{f}?kcore=2")                      # other options: other cache
    assert other.stats["cache_path"] != first.stats["cache_path"]
    write(f, f.read_text() + "u0,i9,9\n")                         # edited file: rebuilt
    assert load_dataset(f"csv:{f}").stats["fingerprint"] != first.stats["fingerprint"]


@pytest.mark.parametrize("content, options, expected", [
    ("uid,iid,ts\n1,10,5\n1,20,3,4\n", "", r"line 3: expected 3 fields separated by ',' like line 1, found 4"),
    ("uid,iid,ts\n1,10,5\n1,,3\n", "", r"line 3: expected rows of user, item and time .*; found no item value"),
    ("uid,iid,ts\n1,10,5\n\n1,20,3\n", "", r"line 3: expected .*; found an empty line"),
    ("uid,iid,ts\n1,10,5\n1,20,soon\n", "", r"line 3: expected a number \(e.g. unix seconds\) in column 'ts'"),
    ("uid,iid,ts\n1,10,2021-01-01\n1,20,yesterday\n", "", r"line 3: expected a date/time in the format"),
    ("uid;iid;ts\n1;10;5\n", "", r"line 1: expected a header naming the columns 'uid', 'iid', 'ts' .*&sep=;"),
    (b"uid,iid,ts\n1,10,5\n1,2\xff,3\n", "", r"line 3: expected UTF-8 text"),
    ("", "", r"file is empty"),
    ("uid,iid,ts\n\n", "", r"no data rows"),
    ("1,10\n", "&header=0&user=1&item=2&time=3", r"line 1: expected .*at least 3 fields, found 2"),
    ("uid,iid,ts\n1,10,5\n", "&usr=x", r"expected options key=value with key one of user, item, time"),
])
def test_csv_bad_input_names_file_line_and_expectation(home, capsys, content, options, expected):
    f = write(home / "data" / "bad.csv", content)
    name = f"csv:{f}?user=uid&item=iid&time=ts{options}"
    assert cli.main(["prepare", "--dataset", name]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(expected, err), err
    if "options" not in expected:
        assert str(f) in err
    assert not [p for p in (home / "cache").glob("csv-*") if p.is_dir()]       # nothing cached


def test_csv_name_options(tmp_path):
    src = interactions.parse_name(f"csv:{tmp_path / 'a.tsv'}?kcore=5&header=no&time=4")
    assert (src.sep, src.header, src.user, src.item, src.time, src.kcore) == ("\t", False, 1, 2, 4, 5)
    assert interactions.parse_name(f"csv:{tmp_path / 'a.txt'}?sep=tab").sep == "\t"
    assert interactions.parse_name(f"csv:{tmp_path / 'a.csv'}?sep=;").sep == ";"
    a, b = (interactions.parse_name(f"csv:{tmp_path / 'my data.csv'}{q}").cache_name() for q in ("", "?kcore=2"))
    assert a != b and a.startswith("csv-my_data-") and "/" not in a
    for bad in ("csv:", f"csv:{tmp_path}/a.csv?sep=ab", f"csv:{tmp_path}/a.csv?kcore=x",
                f"csv:{tmp_path}/a.csv?header=maybe", f"csv:{tmp_path}/a.csv?header=0&user=uid"):
        with pytest.raises(ValueError):
            interactions.parse_name(bad)
