"""The statistical tests behind every verdict of a study (one home for them).

A prompt is one (subject, template); the 2-4 templates of a subject are not independent, so
every resampling and permutation below moves whole subjects: `subjects` gives each prompt's
subject and the per-prompt values are summed within a subject first.

- `sign_flip_p`: one-sided sign-flip permutation test of mean d > 0, flipping whole subjects.
- `cluster_bootstrap`: percentile 95 % interval of a per-prompt mean, resampling subjects.
- `mcnemar_p`: exact one-sided McNemar test on the discordant pairs of two paired conditions.
- `holm`: Holm's step-down adjustment over the p-values of one family.
- `prediction_interval`: where ONE more control set's accuracy would fall (not the CI of the
  controls' mean, which is zero-wide when the sets agree).
- `retention`: share of baseline-correct prompts still correct (the paper's P^det).
- `verdict`: the rule that turns an adjusted p-value and a count of discordant prompts into a
  claim.
- `mcnemar_holds`: the rule that turns a Holm-adjusted McNemar p-value and the prompts that moved
  the tested way (lost, or gained) into a claim.
- `baseline_allows`: whether a cell's baseline leaves anything for an ablation to lose.
- `hypergeom_sf`: exact one-sided hypergeometric p-value of the overlap of two neuron sets drawn
  from one population; `overlap_verdict` turns its Holm-adjusted value into a claim.

Every function is deterministic: resampling draws come from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

BEYOND = "beyond controls"
NOT_BEYOND = "not beyond controls"
UNDERPOWERED = "underpowered"
NOT_TESTABLE = "not testable"  # too few baseline-correct prompts for an ablation to lose
BEYOND_CHANCE = "beyond chance"
NOT_BEYOND_CHANCE = "not beyond chance"
TESTED = (BEYOND, NOT_BEYOND)  # the verdicts of a relation that was tested
EXACT_MAX_SUBJECTS = 16  # exact sign-flip enumeration up to 2**16 sign vectors

TESTS = {
    "controls": "one-sided sign-flip permutation test of the per-prompt difference (mean of "
    "the random sets' correct minus the own set's correct), flipping whole subjects: exact up "
    f"to {EXACT_MAX_SUBJECTS} subjects with a non-zero sum, else seeded random flips",
    "effect": "mean per-prompt difference (controls minus own set), with a subject-cluster "
    "bootstrap 95 % percentile interval",
    "mcnemar": "exact one-sided McNemar test (binomial on the discordant prompts) of the "
    "ablated answers against the baseline answers of the same prompts",
    "holm": "Holm step-down correction over the relations (or cells) of one study",
    "prediction": "95 % prediction interval for one random set: mean ± t(0.975, C-1)·s·"
    "sqrt(1 + 1/C), clipped to [0, 1]",
    "retention": "share of baseline-correct prompts still correct (the paper's P^det)",
    "hypergeom": "exact one-sided hypergeometric test of the shared neurons of two sets against "
    "sets drawn uniformly from all the site's neurons, Holm over the relation x language pairs",
    # The report writes "95 % <this> interval" around it.
    "bootstrap": "subject-cluster bootstrap percentile",
}


@dataclass(frozen=True)
class Rules:
    """The thresholds and resampling sizes of a study's verdicts."""

    alpha: float = 0.05
    min_discordant: int = 5  # prompts where the two compared answers differ
    min_test_subjects: int = 20  # distinct subjects a relation's test prompts need
    permutations: int = 10_000  # random sign flips when the subjects are too many to enumerate
    bootstrap: int = 2_000  # subject-cluster resamples
    seed: int = 0


def cluster_sums(values: Sequence[float], subjects: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of values, number of prompts) per distinct subject, subjects in sorted order."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) != len(subjects):
        raise ValueError(f"{len(v)} values but {len(subjects)} subjects")
    if v.size == 0:
        return np.zeros(0), np.zeros(0)
    _, inverse = np.unique(np.asarray([str(s) for s in subjects]), return_inverse=True)
    return np.bincount(inverse, weights=v), np.bincount(inverse).astype(np.float64)


def sign_flip_p(
    d: Sequence[float], subjects: Sequence[Any], *, draws: int = 10_000, seed: int = 0
) -> float | None:
    """One-sided p-value of mean d > 0 under random signs of whole subjects.

    T = sum of d; each subject's sum S_i keeps or flips its sign. Exact (p = #{T* >= T} / 2^m)
    when at most `EXACT_MAX_SUBJECTS` subjects have S_i != 0 (zero sums change no T*), else
    p = (1 + #{T* >= T}) / (1 + draws) over `draws` seeded random sign vectors. None without
    prompts.
    """
    sums, _ = cluster_sums(d, subjects)
    if sums.size == 0:
        return None
    sums = sums[sums != 0]
    observed = sums.sum()
    tol = 1e-9 * max(1.0, float(np.abs(sums).sum()))
    if sums.size <= EXACT_MAX_SUBJECTS:
        m = sums.size
        signs = 1 - 2 * ((np.arange(2**m)[:, None] >> np.arange(m)) & 1)
        return float(np.mean(signs @ sums >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(draws, sums.size))
    return float((1 + np.sum(signs @ sums >= observed - tol)) / (1 + draws))


def cluster_bootstrap(
    values: Sequence[float], subjects: Sequence[Any], *, resamples: int = 2_000, seed: int = 0
) -> tuple[float | None, float | None]:
    """Percentile 95 % interval of the mean over prompts, resampling whole subjects with
    replacement (each resample's mean = its subjects' summed values / their prompts)."""
    sums, counts = cluster_sums(values, subjects)
    if sums.size == 0:
        return None, None
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, sums.size, size=(resamples, sums.size))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def mcnemar_p(worse: int, better: int) -> float:
    """Exact one-sided McNemar p-value that the condition loses more than it gains:
    P(X >= worse) for X ~ Binomial(worse + better, 1/2). 1.0 with no discordant prompt."""
    n = worse + better
    return 1.0 if n == 0 else float(sps.binom.sf(worse - 1, n, 0.5))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order: the k-th smallest of m is multiplied by
    m - k + 1, made non-decreasing along that order and capped at 1. None stays None and does
    not count in m."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):  # type: ignore[arg-type, return-value]
        running = max(running, min(1.0, (m - k) * float(pvalues[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def prediction_interval(accuracies: Sequence[float]) -> tuple[float | None, float | None]:
    """95 % prediction interval for one more control set's accuracy: mean ± t(0.975, C-1) ·
    s · sqrt(1 + 1/C) over the C sets' accuracies, clipped to [0, 1]; (None, None) if C < 2."""
    c = len(accuracies)
    if c < 2:
        return None, None
    mean = float(np.mean(accuracies))
    half = float(sps.t.ppf(0.975, c - 1) * np.std(accuracies, ddof=1) * math.sqrt(1 + 1 / c))
    return max(0.0, mean - half), min(1.0, mean + half)


def retention(baseline_correct: Sequence[bool], correct: Sequence[bool]) -> float | None:
    """Share of the baseline-correct prompts that are still correct; None when none was."""
    base = np.asarray(baseline_correct, dtype=bool)
    if not base.any():
        return None
    return float(np.asarray(correct, dtype=bool)[base].mean())


def discordant(baseline_correct: Sequence[bool], correct: Sequence[bool]) -> tuple[int, int]:
    """(lost, gained): prompts right at baseline and wrong now, and the reverse."""
    base = np.asarray(baseline_correct, dtype=bool)
    now = np.asarray(correct, dtype=bool)
    return int((base & ~now).sum()), int((~base & now).sum())


def verdict(p_holm: float | None, n_discordant: int, underpowered: bool, rules: Rules) -> str:
    """ "underpowered" when too few subjects; "beyond controls" when the Holm-adjusted p is
    below alpha and at least `min_discordant` prompts differ; else "not beyond controls"."""
    if underpowered:
        return UNDERPOWERED
    if p_holm is not None and p_holm < rules.alpha and n_discordant >= rules.min_discordant:
        return BEYOND
    return NOT_BEYOND


def mcnemar_holds(p_holm: float | None, moved: int, rules: Rules) -> bool:
    """A McNemar claim: the Holm-adjusted one-sided p is below alpha and at least
    `min_discordant` prompts moved the tested way (`lost` for "the set loses answers",
    `gained` for interference); prompts moving the other way count for nothing here."""
    return p_holm is not None and p_holm < rules.alpha and moved >= rules.min_discordant


def baseline_allows(baseline_correct: int, rules: Rules) -> bool:
    """A cell can show an ablation's loss only when at least `min_discordant` of its prompts
    are right at baseline: with fewer, even losing every one of them stays below the
    discordant prompts a verdict needs, so the cell is "not testable" (no number is shown)."""
    return baseline_correct >= rules.min_discordant


def _log_comb(n: int, k: np.ndarray) -> np.ndarray:
    return math.lgamma(n + 1) - _lgamma(k + 1) - _lgamma(n - k + 1)


_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])


def hypergeom_sf(shared: int, population: int, a: int, b: int) -> float:
    """P(X >= shared) for X ~ Hypergeometric(population, a, b): the share of b-neuron sets,
    drawn uniformly without replacement from `population` neurons, that share at least
    `shared` neurons with a fixed set of `a`. The sum over i >= shared of C(a, i) ·
    C(population - a, b - i) / C(population, b), each term in logs (lgamma) and summed
    by log-sum-exp, capped at 1."""
    if not 0 <= a <= population or not 0 <= b <= population:
        raise ValueError(f"set sizes {a} and {b} must lie in 0..{population}")
    lo, hi = max(shared, 0, a + b - population), min(a, b)
    if lo > hi:
        return 0.0
    i = np.arange(lo, hi + 1, dtype=np.float64)
    logs = _log_comb(a, i) + _log_comb(population - a, b - i) - _log_comb(population, np.array(b))
    peak = float(logs.max())
    return min(1.0, float(math.exp(peak) * np.exp(logs - peak).sum()))


def overlap_verdict(p_holm: float | None, rules: Rules) -> str:
    """ "beyond chance" when the Holm-adjusted hypergeometric p is below alpha."""
    return BEYOND_CHANCE if p_holm is not None and p_holm < rules.alpha else NOT_BEYOND_CHANCE
