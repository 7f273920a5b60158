"""``bench sweep``: one hyper-parameter over a list of values, everything else fixed -- one
factor at a time, as in the BERT4Rec paper's sensitivity study (Sun et al., CIKM'19,
§4.5-4.7: hidden size, mask proportion, maximum length; Figures 4-5 and Table 4).

For every dataset x value, the configuration (the model's presets, ``--preset``, ``--set``,
then the swept ``KEY=value``) is trained once per seed as one seed group
(``recboard.benchmarks.experiments.seeds.run_seeds``: a parent run of kind ``group`` with nested seed
runs). The group and its seed runs carry the tags ``recboard.sweep`` (the sweep's name),
``recboard.sweep_param`` and ``recboard.sweep_value`` (the value as the config holds it:
``64``, ``0.2``), which is how ``recboard.leaderboard.figures`` finds them again: figures are
drawn from the MLflow store, never from this process's memory.

Every point is resolved before anything trains, so an unknown key or a value of the wrong
type stops the sweep at once (a ``ConfigError``, exit code 2). Re-running a sweep reuses each
point whose group is FINISHED in the store with the same sweep name, dataset, value, seeds
and resolved configuration (the group's params; a key the group did not record, because the
code gained it later, counts as its default): an interrupted sweep resumes where it stopped,
and a point whose configuration changed (say ``--set epochs=...``) is trained again. A sweep
name belongs to one model and one key; another sweep under it is refused.
"""
from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass

from recboard.benchmarks import config as C
from recboard.errors import UsageError



class SweepError(UsageError):
    """A sweep asked for wrongly (exit code 2)."""


@dataclass
class Point:
    dataset: str
    value: object          # as the resolved config holds it (int, float, str, bool)
    cfg: C.RunConfig


@dataclass
class Sweep:
    name: str
    model: str
    param: str
    seeds: list
    points: list           # [Point]: dataset by dataset, each in the order the values were given

    def tags(self, point: Point) -> dict:
        return {"recboard.sweep": self.name, "recboard.sweep_param": self.param,
                "recboard.sweep_value": str(point.value)}


@dataclass
class Done:
    point: Point
    group_run_id: str
    reused: bool


def parse_param(specs: list) -> tuple[str, list[str]]:
    """``["hidden_size=16,32,64"]`` -> ("hidden_size", ["16", "32", "64"])."""
    if len(specs) != 1:
        raise SweepError(f"a sweep varies one key (one factor at a time, as in the paper); "
                         f"got --param {len(specs)} times: {' '.join(specs)}")
    key, sep, values = specs[0].partition("=")
    key, values = key.strip(), [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key or not values:
        raise SweepError(f"--param expects KEY=v1,v2,... such as hidden_size=16,32,64, got {specs[0]!r}")
    return key, values


def default_name(model: str, key: str) -> str:
    """``bert4rec-hidden_size``; a plug-in's ``pkg.mod:Class`` becomes file-name safe."""
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", f"{model}-{key}")


def plan(model: str, datasets: str, params: list, sets: list | None = None, preset: str = "default",
         seeds: list | None = None, name: str | None = None) -> Sweep:
    """Every point's resolved configuration, or the first error, before anything trains."""
    key, texts = parse_param(params)
    if key == "seed":
        raise SweepError("the seed is not a hyper-parameter to sweep: use --seeds 1,2,3")
    fixed = C.parse_sets(sets)
    if key in fixed:
        raise SweepError(f"{key!r} is both swept (--param) and fixed (--set {key}={fixed[key]})")
    names = [d.strip() for d in str(datasets).split(",") if d.strip()]
    if not names or len(set(names)) != len(names):
        raise SweepError(f"--dataset expects distinct comma-separated datasets such as ml-1m,beauty, got {datasets!r}")
    name = name or default_name(model, key)
    if not C.SAFE_NAME.fullmatch(name):
        raise SweepError(f"sweep name {name!r} becomes a folder and file names: use letters, digits and . _ @ + -")
    points = []
    for dataset in names:
        seen: dict = {}
        for text in texts:
            cfg = C.resolve(model, dataset, fixed, preset=preset, layers=[({key: text}, f"--param {key}")])
            value = cfg.get(key)
            if value in seen:
                raise SweepError(f"--param {key}: {seen[value]!r} and {text!r} are the same value ({value!r})")
            seen[value] = text
            points.append(Point(dataset, value, cfg))
    return Sweep(name, model, key, list(seeds or [1, 2, 3]), points)


def _check_name_is_ours(sweep: Sweep, store: str) -> None:
    """A sweep name holds one model's one key, so its figures never mix two sweeps."""
    from recboard.benchmarks.tracking import store as T

    for run in T.search_runs(T.tag_filter({"recboard.sweep": sweep.name, "recboard.kind": "group"}), store,
                             output_format="list", max_results=20):
        tags = run.data.tags
        held = (tags.get("recboard.model"), tags.get("recboard.sweep_param"))
        if held != (sweep.model, sweep.param):
            raise SweepError(f"sweep name {sweep.name!r} already holds a sweep of {held[0]} over {held[1]} in "
                             f"{store}; give this one another --name")


def finished_group(sweep: Sweep, point: Point, store: str) -> str | None:
    """The newest FINISHED seed group of this point with the same seeds and resolved config."""
    from recboard.benchmarks.tracking import store as T
    from recboard.benchmarks.experiments.seeds import group_params

    query = T.tag_filter({"recboard.kind": "group", "recboard.model": sweep.model,
                          "recboard.dataset": point.dataset, "recboard.seeds": ",".join(map(str, sweep.seeds)),
                          **sweep.tags(point)}, status="FINISHED")
    expected = T.logged_params(group_params(point.cfg))
    # a key added to the code after the group ran is off by default: the group ran as if at its default
    defaults = T.logged_params({**_defaults(point.cfg.train), **_defaults(point.cfg.model)})
    for run in T.search_runs(query, store, output_format="list", order_by=["attributes.start_time DESC"]):
        params = run.data.params
        if all(params.get(k, defaults.get(k)) == v for k, v in expected.items()):
            return run.info.run_id
    return None


def _defaults(config) -> dict:
    """A config dataclass's default values ({} for a plug-in's config that has required fields)."""
    try:
        return dataclasses.asdict(type(config)())
    except TypeError:
        return {}


def run_sweep(sweep: Sweep, *, data_dir=None, cache_dir=None, progress: bool = False) -> list[Done]:
    """Train (or reuse) every point as a seed group, saying which on stderr; see the module
    docstring. An interrupt ends the open group and seed run KILLED (``runner.ending_status``)."""
    from recboard.benchmarks.tracking import store as T
    from recboard.benchmarks.experiments.seeds import run_seeds
    from recboard.datasets.registry import load_dataset

    T.setup()   # the store and experiment exist before they are searched
    store = T.tracking_uri()
    _check_name_is_ours(sweep, store)
    data, data_name, done = None, None, []
    for i, point in enumerate(sweep.points, 1):
        where = f"sweep {sweep.name} [{i}/{len(sweep.points)}] {point.dataset} {sweep.param}={point.value}"
        reused = finished_group(sweep, point, store)
        if reused:
            print(f"{where}: reusing finished seed group {reused} (same seeds and config)", file=sys.stderr)
            done.append(Done(point, reused, True))
            continue
        print(f"{where}: training seeds {','.join(map(str, sweep.seeds))}", file=sys.stderr)
        if data_name != point.dataset:   # one dataset in memory at a time
            data, data_name = load_dataset(point.dataset, data_dir=data_dir, cache_dir=cache_dir), point.dataset
        group = run_seeds(point.cfg, sweep.seeds, data=data, progress=progress, extra_tags=sweep.tags(point),
                          run_name=f"{sweep.name}: {point.dataset} {sweep.param}={point.value} "
                                   f"x{len(sweep.seeds)} seeds")
        done.append(Done(point, group.group_run_id, False))
    return done
