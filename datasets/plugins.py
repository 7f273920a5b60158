"""Datasets and models from outside recboard: ``csv:PATH`` interaction files and adapters
that installed packages register as entry points.

An installed package declares, in its ``pyproject.toml``::

    [project.entry-points."recboard.datasets"]
    my_clicks = "my_package.clicks"            # an adapter module

    [project.entry-points."recboard.models"]
    my_model = "my_package.model:MyModel"      # a class following the model contract

The adapter module is written like ours (``build``, ``source_files``,
``PREPROCESS_VERSION``; see ``recboard.datasets.registry``) and declares what the registry
would otherwise say about it: ``TASK = "sequence"`` or ``"impression"`` (required),
``DESCRIPTION`` (one line; default: the module docstring's first line), and optionally
``ENV_VAR`` (where its files are) and ``FAMILY`` (model presets it shares).

Entry points are read from the installed packages' metadata, without importing them, so
``bench list`` stays instant; a plug-in is imported when a run names it. A built-in name
always wins over a plug-in of the same name. Nothing here imports polars or torch.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

DATASET_GROUP = "recboard.datasets"
MODEL_GROUP = "recboard.models"
TASKS = ("sequence", "impression")
_ADAPTER_API = ("build", "source_files", "PREPROCESS_VERSION")



@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's registry entry (``recboard.datasets.registry.DATASETS``; plug-ins get one too)."""
    module: str
    task: str          # "sequence" or "impression"
    description: str
    env_var: str = ""  # where to look for files already on disk
    family: str = ""   # datasets sharing model presets (the MIND sizes): PRESETS keys

def entry_point_targets(group: str) -> dict[str, str]:
    """{name: "module" or "module:attr"} that installed packages register under ``group``,
    read from their metadata: nothing is imported."""
    from importlib.metadata import entry_points
    return {ep.name: ep.value for ep in entry_points(group=group)}


def import_plugin_module(module_name: str, what: str):
    """``module_name`` imported for ``what``, or a one-line ValueError saying why not.

    Like ``uvicorn app:app``, a module in the working directory is found even when ``bench``
    runs as an installed script (which does not put the working directory on ``sys.path``);
    it is appended, so it never shadows an installed package."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        cwd = str(Path.cwd())
        if e.name != module_name.split(".")[0] or cwd in sys.path:
            raise ValueError(f"{what}: cannot import module {module_name!r} ({e})") from None
        sys.path.append(cwd)
        return import_plugin_module(module_name, what)
    except Exception as e:  # noqa: BLE001 - whatever a user's module raises on import is reported
        raise ValueError(f"{what}: importing module {module_name!r} failed ({type(e).__name__}: {e})") from None


def dataset_spec(name: str):
    """DatasetSpec of a ``csv:`` name or an entry-point dataset; None if ``name`` is neither."""
    if name.startswith("csv:"):
        from recboard.datasets import interactions
        source = interactions.parse_name(name)
        return DatasetSpec(interactions.__name__, "sequence", f"interactions from {source.path}")
    target = entry_point_targets(DATASET_GROUP).get(name)
    if target is None:
        return None
    what = f"plug-in dataset {name!r} ({DATASET_GROUP} entry point {target!r})"
    module = import_plugin_module(target, what)
    missing = [a for a in _ADAPTER_API if not hasattr(module, a)]
    if missing:
        raise ValueError(f"{what}: the adapter module lacks {', '.join(missing)} "
                         "(see recboard.datasets.registry)")
    task = getattr(module, "TASK", None)
    if task not in TASKS:
        raise ValueError(f"{what}: the adapter module must set TASK to one of {', '.join(TASKS)}, got {task!r}")
    doc = (module.__doc__ or "").strip().splitlines()
    description = getattr(module, "DESCRIPTION", None) or (doc[0] if doc else f"plug-in dataset from {target}")
    return DatasetSpec(target, task, description, getattr(module, "ENV_VAR", ""), getattr(module, "FAMILY", ""))


def cache_key_and_adapter(name: str, spec) -> tuple:
    """(the name its prepared cache is filed under, the adapter that builds it). A ``csv:``
    name holds a path, so its cache is filed under a safe name derived from the path and
    options; everything else is filed under its own name, built by its adapter module."""
    if name.startswith("csv:"):
        from recboard.datasets import interactions
        source = interactions.parse_name(name)
        return source.cache_name(), source
    return name, importlib.import_module(spec.module)


def listed(registered: dict, group: str) -> list[tuple[str, str]]:
    """(name, target) of the ``group`` entry points not shadowed by a name in ``registered``,
    for ``bench list``."""
    return [(n, t) for n, t in sorted(entry_point_targets(group).items()) if n not in registered]
