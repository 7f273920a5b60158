"""Dataset statistics as papers report them: users, items, interactions, density
(interactions / (users x items)) and the mean and median sequence length.

One definition serves ``bench prepare``, which has the loaded data and so the median too
(``DataStats.of_data``), and the leaderboard's "Datasets" section (markdown and LaTeX),
which has only what every run records in its tags -- users, items, interactions -- and so
shows the density and the mean but no median (``data_rows``).

On impression data (MIND) the recorded "interactions" are impressions and the items are
news. An impression shows many news at once, so impressions / (users x news) is no
density of anything: it is left out, and the length is impressions per user.
"""
from __future__ import annotations

from dataclasses import dataclass

MISSING = "—"
HEADERS = ("Users", "Items", "Interactions", "Density", "Mean length")
IMPRESSIONS_NOTE = ("On impression data (MIND) the items are news and the interactions are impressions: "
                    "the mean length is impressions per user, and no density is given, because one "
                    "impression shows many news at once.")


@dataclass(frozen=True)
class DataStats:
    users: int | None
    items: int | None
    interactions: int | None
    task: str = "sequence"              # "impression": interactions are impressions, items are news
    median_length: float | None = None  # only where the data is loaded (bench prepare)

    @classmethod
    def of_data(cls, data) -> "DataStats":
        """From a loaded ``SequenceData`` or ``NewsData``, the median length included."""
        import numpy as np

        if data.task == "impression":
            users = np.concatenate([block.user for block in (data.train, data.valid, data.test)])
            lengths = np.bincount(users, minlength=data.n_users)
        else:
            lengths = data.lengths()
        shape = data.shape()
        return cls(shape["users"], shape["items"], shape["interactions"], data.task,
                   float(np.median(lengths)) if len(lengths) else None)

    @property
    def impressions(self) -> bool:
        return self.task == "impression"

    @property
    def density(self) -> float | None:
        if self.impressions or not self.users or not self.items or self.interactions is None:
            return None
        return self.interactions / (self.users * self.items)

    @property
    def mean_length(self) -> float | None:
        return self.interactions / self.users if self.users and self.interactions is not None else None

    def named(self) -> list:
        """(name, text) pairs in the data's own words, for a vertical listing (``bench prepare``)."""
        noun, length = ("impressions", "impressions per user") if self.impressions else \
            ("interactions", "sequence length")
        pairs = [("users", _int(self.users)), ("news" if self.impressions else "items", _int(self.items)),
                 (noun, _int(self.interactions))]
        if not self.impressions:
            pairs.append(("density", _percent(self.density)))
        pairs.append((f"mean {length}", _decimal(self.mean_length)))
        if self.median_length is not None:
            pairs.append((f"median {length}", _decimal(self.median_length)))
        return pairs

    def row(self) -> list:
        """Cells under ``HEADERS``; an impression row names its units, the columns being shared."""
        items, interactions = _int(self.items), _int(self.interactions)
        if self.impressions:
            items, interactions = f"{items} news", f"{interactions} impressions"
        return [_int(self.users), items, interactions, _percent(self.density), _decimal(self.mean_length)]


def data_rows(tables) -> list:
    """(dataset, identity, ``DataStats``) for every data identity in the leaderboard tables,
    once each (its protocols share the data), in table order."""
    rows = {}
    for table in tables:
        key = (table.dataset, table.identity)
        if key not in rows:
            d = table.data
            rows[key] = DataStats(d.get("users"), d.get("items"), d.get("interactions"), _task(table))
    return [(dataset, identity, stats) for (dataset, identity), stats in rows.items()]


def _task(table) -> str:
    # the runs' recboard.task tag is the dataset's task whatever route a model took (BERT4Rec
    # on MIND trains on click sequences but its data is still impressions)
    for row in table.ours.values():
        task = None if row is None else row.get("task")
        if isinstance(task, str) and task:
            return task
    return "impression" if table.protocol == "impressions" else "sequence"


def markdown_section(tables, titles: dict, unknown: str) -> list:
    """The leaderboard's "### Datasets" lines (none when there are no tables). ``titles``:
    dataset display names; ``unknown``: the identity of runs that recorded none."""
    from tabulate import tabulate

    rows = data_rows(tables)
    if not rows:
        return []
    body = [[titles.get(dataset, dataset), "not recorded" if identity == unknown else f"`{identity}`",
             *stats.row()] for dataset, identity, stats in rows]
    text = tabulate(body, headers=["Dataset", "Identity", *HEADERS], tablefmt="github", disable_numparse=True,
                    colalign=("left", "left") + ("right",) * len(HEADERS))
    intro = ("The data of the tables above, as the runs recorded it: density = interactions / "
             "(users × items); mean length = interactions / users (the median needs the data: "
             "`bench prepare` prints it). " + IMPRESSIONS_NOTE)
    return ["### Datasets", "", intro, "", text, ""]


def _int(n) -> str:
    return MISSING if n is None else f"{int(n):,}"


def _decimal(x) -> str:
    return MISSING if x is None else f"{x:,.1f}"


def _percent(x) -> str:
    # three significant digits, as a percentage: ML-1m is 4.84%, Beauty 0.0161%
    return MISSING if x is None else f"{100 * x:.3g}%"
