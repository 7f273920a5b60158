"""`bench sweep` and the sensitivity figures: every point a tracked seed group with the sweep
tags, the plotted mean / std equal to the seed runs' own, bad keys and values refused before
anything trains, finished points reused (an interrupted sweep resumes), and the leaderboard
embedding the figures without listing the sweep's groups as rows."""
from __future__ import annotations

import json
import statistics

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("matplotlib")

from recboard.benchmarks import cli  # noqa: E402
from recboard.leaderboard import figures  # noqa: E402

# tiny and quick: two epochs of three steps over sequences of 10
TINY = ["--set", "epochs=2", "--set", "max_steps_per_epoch=3", "--set", "max_len=10", "--set", "device=cpu"]
SWEEP = ["sweep", "--model", "bert4rec", "--dataset", "synthetic_seq", "--seeds", "1,2", "--quiet", *TINY]
NAME = "bert4rec-hidden_size"


def _runs(uri, **tags):
    import mlflow

    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return mlflow.MlflowClient(uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(uri).search_experiments()], query)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, fresh_store):
    """One sweep of hidden_size over 8 and 16, two seeds each, in a store of its own."""
    import torch

    root = tmp_path_factory.mktemp("sweep")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as the one_thread fixture, for the whole module's training
    with pytest.MonkeyPatch.context() as env:
        uri = fresh_store(root)
        env.setenv("RECBOARD_HOME", str(root))
        env.setenv("RECBOARD_CACHE", str(root / "cache"))
        env.setenv("MLFLOW_TRACKING_URI", uri)
        code = cli.main([*SWEEP, "--param", "hidden_size=8,16", "--out", str(root / "out"),
                         "--json", str(root / "sweep.json")])
        yield {"uri": uri, "root": root, "code": code, "env": env}
    torch.set_num_threads(threads)


def test_sweep_trains_a_tagged_seed_group_per_value_and_writes_png_figures(swept):
    assert swept["code"] == 0
    result = json.loads((swept["root"] / "sweep.json").read_text())
    assert [(p["value"], p["reused"]) for p in result["points"]] == [(8, False), (16, False)]
    groups = _runs(swept["uri"], **{"recboard.kind": "group", "recboard.sweep": NAME})
    assert sorted(g.data.tags["recboard.sweep_value"] for g in groups) == ["16", "8"]
    assert {g.data.tags["recboard.sweep_param"] for g in groups} == {"hidden_size"}
    assert all(g.info.status == "FINISHED" and g.data.params["hidden_size"] == g.data.tags["recboard.sweep_value"]
               for g in groups)
    seeds = _runs(swept["uri"], **{"recboard.kind": "run", "recboard.sweep": NAME})
    assert len(seeds) == 4 and {s.data.tags["recboard.group"] for s in seeds} == {g.info.run_id for g in groups}
    assert all(s.data.tags["recboard.sweep_value"] == s.data.params["hidden_size"] for s in seeds)
    out = swept["root"] / "out"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"{NAME}-full-HR_at_10.png", f"{NAME}-full-NDCG_at_10.png"]
    from matplotlib.image import imread
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and imread(out / name).shape[0] > 100
    table = (out / "sweep.md").read_text()
    assert f"![bert4rec: test NDCG@10 vs hidden_size]({NAME}-full-NDCG_at_10.png)" in table
    assert "| Synthetic sequences | 16" in table and "| 1,2 " in table and "cpu" in table


def test_plotted_points_are_the_seed_runs_mean_and_sample_std(swept):
    seeds = _runs(swept["uri"], **{"recboard.kind": "run", "recboard.sweep": NAME})
    by_value: dict = {}
    for run in seeds:
        by_value.setdefault(float(run.data.tags["recboard.sweep_value"]), []).append(run.data.metrics["test/NDCG_at_10"])
    expected = {v: (statistics.mean(xs), statistics.stdev(xs)) for v, xs in by_value.items()}
    assert len(expected) >= 2 and all(std > 0 for _, std in expected.values())  # the seeds really differ

    section, = figures.sections(figures.collect(swept["uri"], sweeps=[NAME]))
    ax = figures.figure(section, "NDCG@10").axes[0]
    bars, = ax.containers                      # one dataset, one errorbar line
    line, _, (segments,) = bars.lines
    plotted = {}
    for x, y, ((_, low), (_, high)) in zip(line.get_xdata(), line.get_ydata(), segments.get_segments()):
        plotted[float(x)] = (y, (high - low) / 2)
    assert plotted.keys() == expected.keys()
    for value, (mean, std) in expected.items():
        assert plotted[value] == pytest.approx((mean, std), rel=1e-9)
    assert "bert4rec" in ax.get_title() and "NDCG@10" in ax.get_title() and "full ranking" in ax.get_title()


@pytest.mark.parametrize("args, message", [
    (["--param", "hiden_size=8,16"], "unknown config key 'hiden_size' (from --param hiden_size); did you mean 'hidden_size'"),
    (["--param", "hidden_size=8,x"], "config key 'hidden_size' expects int, got 'x'"),
    (["--param", "hidden_size=8,08"], "--param hidden_size: '8' and '08' are the same value (8)"),
    (["--param", "hidden_size=8", "--param", "mask_ratio=0.1"], "a sweep varies one key"),
    (["--param", "hidden_size"], "--param expects KEY=v1,v2,..."),
    (["--param", "seed=1,2"], "use --seeds 1,2,3"),
    (["--param", "hidden_size=8", "--set", "hidden_size=16"], "'hidden_size' is both swept (--param) and fixed"),
    (["--param", "hidden_size=8", "--name", "a/b"], "sweep name 'a/b' becomes a folder"),
])
def test_a_bad_key_or_value_is_a_usage_error_before_anything_trains(args, message, tmp_path, monkeypatch, capsys):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    assert cli.main([*SWEEP, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not store.exists() and not (tmp_path / "cache").exists()   # nothing was tracked or prepared


def test_rerun_reuses_finished_points_and_an_interrupted_sweep_resumes(swept, capsys):
    from recboard.benchmarks.training import runner

    before = len(_runs(swept["uri"], **{"recboard.sweep": NAME}))
    assert cli.main([*SWEEP, "--param", "hidden_size=8,16", "--out", str(swept["root"] / "again")]) == 0
    err = capsys.readouterr().err
    assert err.count("reusing finished seed group") == 2 and "training seeds" not in err
    assert len(_runs(swept["uri"], **{"recboard.sweep": NAME})) == before     # no new run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    with pytest.MonkeyPatch.context() as patch:    # Ctrl-C while the new point's first seed is tested
        patch.setattr(runner, "test_and_save", interrupted)
        assert cli.main([*SWEEP, "--param", "hidden_size=8,16,24", "--out", str(swept["root"] / "again")]) == 130
    killed = _runs(swept["uri"], **{"recboard.sweep": NAME, "recboard.sweep_value": "24"})
    assert sorted((r.data.tags["recboard.kind"], r.info.status) for r in killed) == [("group", "KILLED"),
                                                                                      ("run", "KILLED")]
    capsys.readouterr()
    assert cli.main([*SWEEP, "--param", "hidden_size=8,16,24", "--out", str(swept["root"] / "again"),
                     "--json", str(swept["root"] / "again.json")]) == 0
    err = capsys.readouterr().err
    assert err.count("reusing finished seed group") == 2 and "hidden_size=24: training seeds 1,2" in err
    points = json.loads((swept["root"] / "again.json").read_text())["points"]
    assert [(p["value"], p["reused"]) for p in points] == [(8, True), (16, True), (24, False)]
    # a changed configuration is another point: not reused
    assert cli.main([*SWEEP, "--param", "hidden_size=8", "--set", "lr=0.002", "--out",
                     str(swept["root"] / "lr")]) == 0
    assert "training seeds 1,2" in capsys.readouterr().err


def test_another_sweep_under_a_taken_name_is_refused(swept, capsys):
    assert cli.main([*SWEEP, "--param", "mask_ratio=0.3", "--name", NAME]) == 2
    assert f"sweep name {NAME!r} already holds a sweep of bert4rec over hidden_size" in capsys.readouterr().err


def test_a_dataset_swept_later_joins_the_figure(swept, tmp_path):
    """One dataset at a time under one name (max-length grids differ): the sweep's figure and
    table keep the line of the dataset swept before."""
    import random

    rng = random.Random(0)
    rows = [f"{user},{rng.randint(1, 40)},{t}" for user in range(60) for t in range(12)]
    (tmp_path / "plays.csv").write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    other = ["sweep", "--model", "bert4rec", "--dataset", f"csv:{tmp_path / 'plays.csv'}", "--seeds", "1,2",
             "--quiet", *TINY, "--param", "hidden_size=8", "--name", NAME, "--out", str(tmp_path / "out")]
    assert cli.main(other) == 0
    table = (tmp_path / "out" / "sweep.md").read_text()
    assert f"| csv:{tmp_path / 'plays.csv'} " in table and "| Synthetic sequences " in table


def test_leaderboard_embeds_the_figures_and_keeps_sweeps_out_of_its_tables(swept, tmp_path, capsys):
    out = tmp_path / "board" / "LEADERBOARD.md"
    out.parent.mkdir()
    assert cli.main(["leaderboard", "--out", str(out), "--tracking-uri", swept["uri"]]) == 0
    text = out.read_text()
    section = text.split("### Sensitivity (the paper's §4.5–4.7)")[1].split("### Datasets")[0]
    links = [line.split("](")[1].rstrip(")") for line in section.splitlines() if line.startswith("![")]
    assert links == [f"figures/{NAME}-full-NDCG_at_10.png", f"figures/{NAME}-full-HR_at_10.png"]
    assert all((out.parent / link).read_bytes()[:4] == b"\x89PNG" for link in links)
    groups = _runs(swept["uri"], **{"recboard.kind": "group", "recboard.sweep": NAME})
    shown = [g.info.run_id[:8] for g in groups if f"`{g.info.run_id[:8]}`" in text]
    assert shown and all(f"`{run_id}`" in section for run_id in shown)     # only under the figures
    assert "No finished runs with test metrics" in text                       # not rows of the tables
    assert cli.main(["leaderboard", "--tracking-uri", swept["uri"], "--no-figures"]) == 0
    assert "Sensitivity" not in capsys.readouterr().out
    assert cli.main(["leaderboard", "--tracking-uri", swept["uri"], "--format", "csv", "--figures", "x"]) == 2


def _point(dataset, value, mean):
    return figures.SweepPoint("s", "bert4rec", "max_len", "full", dataset, value, {"NDCG@10": (mean, 0.01)},
                              [1, 2], "cpu", "abc", 1.0, f"g-{dataset}-{value}", 0)


def test_datasets_with_different_grids_share_a_log2_axis():
    """Max-length grids differ between datasets (the paper's Figure 5); each line keeps its own."""
    points = [_point("ml-1m", v, 0.1) for v in ("10", "50", "200")] + [_point("beauty", v, 0.2) for v in ("10", "20")]
    section, = figures.sections(points)
    ax = figures.figure(section, "NDCG@10").axes[0]
    assert ax.get_xscale() == "log"
    assert [list(c.lines[0].get_xdata()) for c in ax.containers] == [[10, 50, 200], [10, 20]]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "20", "50", "200"]
    assert [c.get_label() for c in ax.containers] == ["ML-1m", "Beauty"]
    categorical = figures.figure(figures.Section("s", "bert4rec", "item_encoder", "full",
                                                 [_point("ml-1m", v, 0.1) for v in ("minilm", "glove")]), "NDCG@10")
    assert list(categorical.axes[0].containers[0].lines[0].get_xdata()) == [0.0, 1.0]


def test_a_group_from_before_a_config_key_existed_is_reused_at_that_keys_default(swept):
    """Code gains keys between sessions (a GPU session's stores come back later); a key the
    old group never recorded counts as its default, anything else must match."""
    import mlflow

    from recboard.benchmarks.experiments import sweep as S

    plan = S.plan("bert4rec", "synthetic_seq", ["hidden_size=8"], sets=TINY[1::2], seeds=[1, 2])
    point = plan.points[0]
    client = mlflow.MlflowClient(swept["uri"])
    finished = client.get_run(S.finished_group(plan, point, swept["uri"]))

    def copy_without(key: str, **changed) -> str:
        run = client.create_run(finished.info.experiment_id, tags=finished.data.tags)
        params = {k: v for k, v in finished.data.params.items() if k != key} | changed
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    older = copy_without("grad_clip")            # recorded before grad_clip existed; its default is in force
    assert S.finished_group(plan, point, swept["uri"]) == older
    copy_without("grad_clip", lr="0.5")          # newer still, but another lr: never reused
    assert S.finished_group(plan, point, swept["uri"]) == older
    point.cfg.train.grad_clip = 1.0              # not the default: the old group does not match any more
    assert S.finished_group(plan, point, swept["uri"]) != older
