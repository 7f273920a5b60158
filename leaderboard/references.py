"""Published numbers shown beside ours: ``references.toml`` (packaged next to this file)
parsed into ``Reference`` rows and checked -- known dataset, protocol and citation, metrics
the protocol reports, values that are fractions -- with errors naming the file, line and
what was expected. ``[[gaps]]`` entries are sentences printed under a table of ours: where a
row of ours falls short of a published one, what differs and what we measured about it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from recboard.benchmarks.evaluation.protocols import IMPRESSION_METRICS, PROTOCOLS, SEQUENCE_METRICS

REFERENCES_PATH = Path(__file__).with_name("references.toml")


def table_metrics(protocol: str) -> tuple:
    """The metrics a table (and a published row) under ``protocol`` reports."""
    return IMPRESSION_METRICS if protocol == "impressions" else SEQUENCE_METRICS


@dataclass
class Reference:
    dataset: str
    protocol: str
    model: str
    citation: str
    source: str
    metrics: dict            # label -> float
    text: dict               # label -> the value as printed in the source
    note: str = ""


DATA_KEYS = ("users", "items", "interactions", "identity")


@dataclass
class Gap:
    dataset: str
    protocol: str
    model: str               # the row of ours the sentence is about
    text: str


@dataclass
class References:
    results: list = field(default_factory=list)
    gaps: list = field(default_factory=list)        # [Gap]
    citations: dict = field(default_factory=dict)   # key -> {"text", "url"}
    data: dict = field(default_factory=dict)        # dataset -> {users, items, interactions, identity}

    def measured_on(self, dataset: str, shape: dict) -> bool:
        """Whether the published rows of ``dataset`` were measured on data of this shape
        ({"users", "items", "interactions", "identity"}): every field ``[data.<dataset>]``
        names must match. A dataset without a ``[data]`` entry matches nothing, so its
        published rows are never set beside data nobody checked."""
        spec = self.data.get(dataset)
        return bool(spec) and all(str(shape.get(k)) == str(v) for k, v in spec.items())


def load_references(path=None) -> References:
    """Parse and check ``references.toml``; errors name the file, line and what was expected."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
        import tomli as tomllib

    path = Path(path) if path else REFERENCES_PATH
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    lines = text.splitlines()

    def line_of(n: int, key: str, table: str = "results") -> str:
        """Line of ``key = ...`` inside the n-th [[table]] block (else the block's header)."""
        starts = [i + 1 for i, line in enumerate(lines) if line.strip() == f"[[{table}]]"]
        if n >= len(starts):
            return "?"
        end = next((i for i in range(starts[n], len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        for i in range(starts[n], end):
            if lines[i].split("=", 1)[0].strip().strip('"') == key:
                return str(i + 1)
        return str(starts[n])

    citations = data.get("citations", {})
    for key, cite in citations.items():
        if not isinstance(cite, dict) or not isinstance(cite.get("text"), str):
            raise ValueError(f"{path}: [citations.{key}] needs a text = \"...\" field")
    from recboard.datasets.registry import DATASETS

    refs = References(citations=citations, data=_data_specs(data.get("data", {}), path, DATASETS))
    for n, entry in enumerate(data.get("results", [])):
        def where(key: str, n=n) -> str:
            return f"{path}, line {line_of(n, key)} ([[results]] #{n + 1})"

        missing = [k for k in ("dataset", "protocol", "model", "citation", "metrics") if k not in entry]
        if missing:
            raise ValueError(f"{where('')}: missing {', '.join(missing)}")
        if entry["dataset"] not in DATASETS:
            raise ValueError(f"{where('dataset')}: unknown dataset {entry['dataset']!r}; expected one of "
                             f"{', '.join(DATASETS)}")
        if entry["protocol"] not in PROTOCOLS:
            raise ValueError(f"{where('protocol')}: protocol must be one of {', '.join(PROTOCOLS)}, "
                             f"got {entry['protocol']!r}")
        if entry["citation"] not in citations:
            raise ValueError(f"{where('citation')}: citation {entry['citation']!r} has no [citations.{entry['citation']}]")
        allowed = table_metrics(entry["protocol"])
        values, printed = {}, {}
        for label, value in entry["metrics"].items():
            if label not in allowed:
                raise ValueError(f"{where('metrics')}: metric {label!r} is not reported under protocol "
                                 f"{entry['protocol']!r}; expected {', '.join(allowed)}")
            try:
                values[label] = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where('metrics')}: metric {label!r} must be a number, got {value!r}") from None
            if not 0.0 <= values[label] <= 1.0:
                raise ValueError(f"{where('metrics')}: metric {label!r} = {value!r}; expected a fraction in [0, 1]")
            printed[label] = value if isinstance(value, str) else repr(value)
        refs.results.append(Reference(entry["dataset"], entry["protocol"], entry["model"],
                                      entry["citation"], entry.get("source", ""), values, printed,
                                      entry.get("note", "")))
    for n, entry in enumerate(data.get("gaps", [])):
        missing = [k for k in ("dataset", "protocol", "model", "text") if not isinstance(entry.get(k), str)]
        if missing:
            raise ValueError(f"{path}, line {line_of(n, missing[0], 'gaps')} ([[gaps]] #{n + 1}): expected "
                             f"{', '.join(missing)} = \"...\"")
        if entry["protocol"] not in PROTOCOLS:
            raise ValueError(f"{path}, line {line_of(n, 'protocol', 'gaps')} ([[gaps]] #{n + 1}): protocol must be "
                             f"one of {', '.join(PROTOCOLS)}, got {entry['protocol']!r}")
        refs.gaps.append(Gap(entry["dataset"], entry["protocol"], entry["model"], " ".join(entry["text"].split())))
    return refs


def _data_specs(specs: dict, path: Path, datasets) -> dict:
    """``[data.<dataset>]`` tables: what data a dataset's published rows were measured on."""
    for name, spec in specs.items():
        where = f"{path}: [data.{name}]"
        if name not in datasets:
            raise ValueError(f"{where}: unknown dataset {name!r}; expected one of {', '.join(datasets)}")
        unknown = sorted(set(spec) - set(DATA_KEYS))
        if not spec or unknown:
            raise ValueError(f"{where}: expected some of {', '.join(DATA_KEYS)}"
                             + (f", got {', '.join(unknown)}" if unknown else ""))
    return {name: dict(spec) for name, spec in specs.items()}
