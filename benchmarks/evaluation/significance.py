"""Is one model really better? Paired tests on the same test users (or MIND impressions).

Every tracked run saves each test example's metrics (``recboard.benchmarks.tracking.saved``), so two
runs on the same data and protocol can be compared example by example:

* a paired t-test (``scipy.stats.ttest_rel``) on the per-example differences, with its 95%
  confidence interval of the mean difference. Per-user HR is 0/1 and NDCG is bounded and
  skewed, but the mean over thousands of users is close to normal, which is what the t-test
  needs;
* a paired bootstrap (resampling users, seeded): a 95% percentile interval and a p-value
  that assume nothing about the distribution, a check on the t-test for small test sets.

Not the Wilcoxon signed-rank test: for most users both models miss the target, so most
differences are exactly zero, and a test of medians says little about a difference in means.

A seed group (``bench run --seeds``) is compared through each example's mean over its seeds.
``holm`` corrects the p-values of several comparisons (the leaderboard's † marks).
"""
from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 5000


class ComparisonError(ValueError):
    pass


def paired_test(a: np.ndarray, b: np.ndarray, seed: int = 0, n_boot: int = BOOTSTRAP_SAMPLES) -> dict:
    """Paired comparison of per-example values ``a`` and ``b`` (rows where either is NaN,
    e.g. an impression with no negative, are left out)."""
    from scipy import stats

    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = np.asarray(a, np.float64)[keep], np.asarray(b, np.float64)[keep]
    diff = a - b
    n, mean = len(diff), float(diff.mean()) if len(diff) else math.nan
    if n < 2:
        raise ComparisonError(f"a paired test needs at least 2 examples both runs scored, got {n}")
    sd = float(diff.std(ddof=1))
    if sd == 0.0:  # identical or constantly shifted: no spread to test against
        t_p, t_half = (1.0 if mean == 0.0 else 0.0), 0.0
    else:
        t_p = float(stats.ttest_rel(a, b).pvalue)
        t_half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    boot = bootstrap_means(diff, seed, n_boot)
    tail = (1 - CONFIDENCE) / 2
    boot_p = bootstrap_p(boot) if sd else t_p
    return {"n": n, "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": mean,
            "ci_low": mean - t_half, "ci_high": mean + t_half, "p_ttest": t_p,
            "boot_ci_low": float(np.quantile(boot, tail)), "boot_ci_high": float(np.quantile(boot, 1 - tail)),
            "p_bootstrap": boot_p, "n_bootstrap": n_boot}


def mean_and_std(values: list) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value): a seed group's mean ± std."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def bootstrap_p(boot: np.ndarray) -> float:
    """Two-sided percentile p-value: how often a resampled mean falls on the other side of 0,
    counted as (k + 1) / (B + 1) per side (Davison & Hinkley 1997, eq. 4.11): B resamples
    cannot show a p below 2 / (B + 1), so none is reported as 0."""
    k = min(int((boot <= 0).sum()), int((boot >= 0).sum()))
    return min(1.0, 2 * (k + 1) / (len(boot) + 1))


def bootstrap_means(values: np.ndarray, seed: int, n_boot: int) -> np.ndarray:
    """Means of ``n_boot`` resamples with replacement, drawn in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    n = len(values)
    chunk = max(1, 4_000_000 // n)
    means = [values[rng.integers(0, n, (min(chunk, n_boot - done), n))].mean(axis=1)
             for done in range(0, n_boot, chunk)]
    return np.concatenate(means)


def holm(pvalues: list) -> list:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------- runs and groups

def run_examples(ref: str, store: str | None = None) -> tuple[dict, dict]:
    """(description, per-example metrics) of a run id or a seed group's parent run id; a
    group's examples are each example's mean over its seeds."""
    from recboard.benchmarks.tracking.saved import load_examples
    from recboard.benchmarks.tracking.store import get_run, search_runs, tag_filter

    tags = get_run(ref, store).data.tags
    members = [ref]
    if tags.get("recboard.kind") == "group":
        found = search_runs(tag_filter({"recboard.group": ref}, status="FINISHED"), store, output_format="list")
        members = [r.info.run_id for r in found]
    saved = [load_examples(run_id, store) for run_id in members]
    if not members or any(s is None for s in saved):
        raise ComparisonError(f"run {ref} has no saved test examples (runs recorded before they were saved, "
                              "or runs that did not finish, cannot be compared)")
    about = {"ref": ref, "model": tags.get("recboard.model"), "dataset": tags.get("recboard.dataset"),
             "identity": tags.get("recboard.identity"), "protocol": tags.get("recboard.protocol"),
             "runs": len(members), "variant": tags.get("recboard.variant", "")}
    return about, mean_over_runs(saved)


def mean_over_runs(saved: list) -> dict:
    """Each example's mean over several runs' per-example metrics (a seed group's seeds)."""
    rows = saved[0]["row"]
    if any(not np.array_equal(s["row"], rows) for s in saved):
        raise ComparisonError("the seeds of a group were scored on different test examples")
    return {"row": rows, **{k: np.mean([s[k] for s in saved], axis=0) for k in saved[0] if k != "row"}}


def compare(ref_a: str, ref_b: str, metric: str | None = None, store: str | None = None) -> dict:
    """Paired tests of A against B for every metric (or ``metric``); refuses runs on
    different data or protocols with a one-line reason."""
    about_a, ex_a = run_examples(ref_a, store)
    about_b, ex_b = run_examples(ref_b, store)
    for key, what in (("identity", "data"), ("protocol", "protocols")):
        if about_a[key] != about_b[key]:
            raise ComparisonError(f"runs {ref_a} and {ref_b} were scored on different {what} "
                                  f"({about_a[key]} vs {about_b[key]}); a paired test needs the same test examples")
    if not np.array_equal(ex_a["row"], ex_b["row"]):
        raise ComparisonError(f"runs {ref_a} and {ref_b} scored different test examples")
    from recboard.benchmarks.evaluation.protocols import IMPRESSION_METRICS, SEQUENCE_METRICS
    names = [m for m in (*SEQUENCE_METRICS, *IMPRESSION_METRICS) if m in ex_a]
    if metric is not None and metric not in names:
        raise ComparisonError(f"metric {metric!r} is not one of the runs' metrics: {', '.join(names)}")
    tests = {m: paired_test(ex_a[m], ex_b[m]) for m in ([metric] if metric else names)}
    return {"a": about_a, "b": about_b, "metrics": tests}


def format_comparison(result: dict) -> str:
    """``compare``'s result as a table: both means, A - B, 95% intervals and p-values."""
    from tabulate import tabulate

    a, b = result["a"], result["b"]
    label = {k: f"{r['model']}{' [' + r['variant'] + ']' if r['variant'] else ''} ({r['runs']} run"
                f"{'s' if r['runs'] > 1 else ''})" for k, r in (("a", a), ("b", b))}
    rows = [[name, t["mean_a"], t["mean_b"], t["diff"], f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}]",
             _p(t["p_ttest"]), f"[{t['boot_ci_low']:+.4f}, {t['boot_ci_high']:+.4f}]",
             _p(t["p_bootstrap"], floor=2 / (t["n_bootstrap"] + 1))]
            for name, t in result["metrics"].items()]
    n = next(iter(result["metrics"].values()))["n"]
    head = (f"A = {a['ref']}: {label['a']}\nB = {b['ref']}: {label['b']}\n"
            f"{a['dataset']} ({a['protocol']}, data {a['identity']}), {n:,} paired test examples\n")
    return head + tabulate(rows, headers=["metric", "A", "B", "A - B", "95% CI (t)", "p (paired t)",
                                          "95% CI (bootstrap)", "p (bootstrap)"], floatfmt=".4f")


def _p(value: float, floor: float = 0.0) -> str:
    """A p-value to 4 decimals; one at the test's resolution ``floor`` (the bootstrap's
    smallest possible p) as "<=" that floor, one below 1e-4 as "<0.0001"."""
    if floor and value <= floor:
        return f"<={floor:.1g}"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"
