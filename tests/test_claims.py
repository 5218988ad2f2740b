"""analysis/claims.py: each test against scipy or a brute-force enumeration, exact small cases
worked by hand, and Holm against hand-computed values."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from warehouse.analysis.claims import (
    BEYOND,
    BEYOND_CHANCE,
    NOT_BEYOND,
    NOT_BEYOND_CHANCE,
    UNDERPOWERED,
    Rules,
    baseline_allows,
    cluster_bootstrap,
    cluster_sums,
    discordant,
    holm,
    hypergeom_sf,
    mcnemar_holds,
    mcnemar_p,
    overlap_verdict,
    prediction_interval,
    retention,
    sign_flip_p,
    verdict,
)


def test_cluster_sums_add_up_each_subjects_prompts():
    sums, counts = cluster_sums([1.0, 2.0, 3.0, 0.5], ["b", "a", "b", "c"])
    assert sums.tolist() == [2.0, 4.0, 0.5]  # subjects a, b, c
    assert counts.tolist() == [1.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="3 values but 2 subjects"):
        cluster_sums([1, 2, 3], ["a", "b"])


# ----------------------------------------------------------------------------- sign flip


def test_sign_flip_exact_small_cases():
    # 3 subjects, all worse under the own set: only the identity reaches T, p = 1/8.
    assert sign_flip_p([1.0, 1.0, 1.0], ["a", "b", "c"]) == 1 / 8
    # The same 3 prompts from ONE subject: one sign to flip, p = 1/2.
    assert sign_flip_p([1.0, 1.0, 1.0], ["a", "a", "a"]) == 1 / 2
    # A one-prompt difference is never significant, however the controls agree.
    assert sign_flip_p([0.0] * 23 + [1.0], [str(i) for i in range(24)]) == 1 / 2
    # Nothing differs: p = 1. No prompts: no test.
    assert sign_flip_p([0.0, 0.0], ["a", "b"]) == 1.0
    assert sign_flip_p([], []) is None
    # Sums 2, 1, -1 (subject a has two prompts): T = 2; T* >= 2 for signs (+,+,+), (+,+,-),
    # (+,-,-): 3 of 8.
    assert sign_flip_p([1.0, 1.0, 1.0, -1.0], ["a", "a", "b", "c"]) == 3 / 8


def test_sign_flip_exact_equals_brute_force_and_scipy():
    rng = np.random.default_rng(3)
    d = rng.choice([-1.0, -2 / 3, 0.0, 1 / 3, 1.0], size=30)
    subjects = rng.integers(0, 12, size=30).astype(str)
    sums, _ = cluster_sums(d, subjects)
    observed = sums.sum()
    brute = np.mean(
        [np.dot(s, sums) >= observed - 1e-12 for s in itertools.product([1, -1], repeat=len(sums))]
    )
    ref = sps.permutation_test(
        (sums,),
        np.sum,
        permutation_type="samples",
        alternative="greater",
        n_resamples=np.inf,
    ).pvalue
    got = sign_flip_p(d, subjects)
    assert got == pytest.approx(brute, abs=1e-12)
    assert got == pytest.approx(ref, abs=1e-12)


def test_sign_flip_random_draws_match_scipy_and_are_seeded():
    rng = np.random.default_rng(7)
    subjects = np.repeat(np.arange(40), 2).astype(str)
    d = rng.normal(0.15, 1.0, size=80)
    sums, _ = cluster_sums(d, subjects)
    ref = sps.permutation_test(
        (sums,),
        np.sum,
        permutation_type="samples",
        alternative="greater",
        n_resamples=99_999,
        rng=1,
    ).pvalue
    got = sign_flip_p(d, subjects, draws=20_000, seed=0)
    assert got == pytest.approx(ref, abs=0.01)
    assert got == sign_flip_p(d, subjects, draws=20_000, seed=0)
    # Never below 1 / (1 + draws): a random-draw p-value counts the observed order.
    assert sign_flip_p(np.ones(40), subjects[::2], draws=999) == 1 / 1000


# ----------------------------------------------------------------------------- bootstrap


def test_cluster_bootstrap_of_one_prompt_per_subject_is_the_plain_bootstrap():
    rng = np.random.default_rng(5)
    x = rng.normal(0.3, 1.0, size=60)
    lo, hi = cluster_bootstrap(x, np.arange(60), resamples=20_000, seed=1)
    ref = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=20_000, rng=2)
    ci = ref.confidence_interval
    assert (lo, hi) == (pytest.approx(ci.low, abs=0.02), pytest.approx(ci.high, abs=0.02))


def test_cluster_bootstrap_resamples_whole_subjects():
    # Two subjects, all-1 and all-0 with 3 prompts each: a resample holds 0, 1 or 2 copies of
    # the first, so its mean is 0, 1/2 or 1; the 2.5 % and 97.5 % points are 0 and 1.
    values, subjects = [1, 1, 1, 0, 0, 0], ["a"] * 3 + ["b"] * 3
    assert cluster_bootstrap(values, subjects, resamples=4_000, seed=0) == (0.0, 1.0)
    # Every subject alike: the interval is the value itself.
    assert cluster_bootstrap([0.25] * 6, list("aabbcc")) == (0.25, 0.25)
    assert cluster_bootstrap([], []) == (None, None)
    # Seeded: the same call gives the same interval.
    x = np.linspace(0, 1, 30)
    assert cluster_bootstrap(x, np.arange(30) // 3) == cluster_bootstrap(x, np.arange(30) // 3)


# ----------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(("worse", "better"), [(6, 0), (5, 1), (3, 3), (0, 4), (12, 5), (1, 0)])
def test_mcnemar_is_scipys_exact_binomial_test(worse: int, better: int):
    ref = sps.binomtest(worse, worse + better, 0.5, alternative="greater").pvalue
    assert mcnemar_p(worse, better) == pytest.approx(ref, rel=1e-12)


def test_mcnemar_whole_values():
    assert mcnemar_p(6, 0) == 1 / 64  # 6 lost, none gained: the smallest n below 0.05
    assert mcnemar_p(5, 0) == 1 / 32
    assert mcnemar_p(0, 0) == 1.0
    assert discordant([True, True, False, False, True], [False, True, True, False, False]) == (
        2,
        1,
    )


# ----------------------------------------------------------------------------- Holm


def test_holm_against_hand_computed_values():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # None is neither adjusted nor counted in m (m = 2 here: 0.02 * 2, then 0.6 * 1)
    assert holm([0.6, None, 0.02]) == [pytest.approx(0.6), None, pytest.approx(0.04)]
    # capped at 1: 0.02 * 3, 0.6 * 2 -> 1, 0.7 * 1 -> 1 (never below an earlier value)
    assert holm([0.6, 0.7, 0.02]) == pytest.approx([1.0, 1.0, 0.06])
    assert holm([0.2]) == [0.2]
    assert holm([]) == []
    # ties keep their order-free values: both 0.01 * 2 = 0.02
    assert holm([0.01, 0.01]) == pytest.approx([0.02, 0.02])


# ----------------------------------------------------------------------------- intervals


def test_prediction_interval_is_t_times_s_times_sqrt_1_plus_1_over_c():
    accs = [0.5, 0.6, 0.55, 0.45]
    half = sps.t.ppf(0.975, 3) * np.std(accs, ddof=1) * math.sqrt(1 + 1 / 4)
    lo, hi = prediction_interval(accs)
    assert (lo, hi) == (pytest.approx(0.525 - half), pytest.approx(0.525 + half))
    assert (lo, hi) == (pytest.approx(0.29533, abs=1e-5), pytest.approx(0.75467, abs=1e-5))
    # Wider than the t interval of the mean by sqrt(C + 1).
    ci = sps.t.interval(0.95, 3, loc=0.525, scale=sps.sem(accs))
    assert (hi - 0.525) / (ci[1] - 0.525) == pytest.approx(math.sqrt(5))
    assert prediction_interval([0.9, 1.0, 1.0])[1] == 1.0  # clipped: a share is at most 1
    assert prediction_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert prediction_interval([0.3]) == (None, None)


def test_retention_is_the_share_of_baseline_correct_still_correct():
    assert retention([True, True, True, False], [True, False, False, True]) == 1 / 3
    assert retention([False, False], [True, True]) is None


# ----------------------------------------------------------------------------- verdict


def test_verdict_needs_adjusted_p_discordant_prompts_and_subjects():
    rules = Rules()
    assert verdict(0.01, 6, False, rules) == BEYOND
    assert verdict(0.01, 4, False, rules) == NOT_BEYOND  # too few prompts differ
    assert verdict(0.05, 9, False, rules) == NOT_BEYOND  # p must be below alpha
    assert verdict(None, 9, False, rules) == NOT_BEYOND  # no controls, no test
    assert verdict(0.001, 30, True, rules) == UNDERPOWERED
    assert dataclasses.asdict(Rules()) == {
        "alpha": 0.05,
        "min_discordant": 5,
        "min_test_subjects": 20,
        "permutations": 10_000,
        "bootstrap": 2_000,
        "seed": 0,
    }


def test_a_mcnemar_claim_needs_enough_prompts_moved_the_tested_way():
    """9 lost, 1 gained: p = 11/1024 (scipy's exact binomial test). With min_discordant 10
    the 10 discordant prompts would pass a lost + gained rule; only 9 were lost: no claim."""
    p = mcnemar_p(9, 1)
    assert p == pytest.approx(sps.binomtest(9, 10, 0.5, alternative="greater").pvalue)
    assert p == pytest.approx(11 / 1024)
    strict = Rules(min_discordant=10)
    assert (mcnemar_holds(p, 9, strict), mcnemar_holds(p, 10, strict)) == (False, True)
    assert mcnemar_holds(p, 9, Rules()) is True
    assert mcnemar_holds(0.05, 9, Rules()) is False  # p must be below alpha
    assert mcnemar_holds(None, 9, Rules()) is False  # nothing tested


# ------------------------------------------------------------- overlap of two neuron sets


@pytest.mark.parametrize(
    ("shared", "population", "a", "b"),
    [
        (0, 10, 3, 4),
        (2, 10, 3, 4),
        (3, 10, 3, 4),
        (4, 10, 3, 4),  # more than either set can share: p = 0
        (4, 20, 5, 5),
        (1, 46_080, 165, 165),  # SmolLM2's ffn.act, the study's top-165
        (5, 36_864, 132, 132),  # gemma3-270m's ffn.act, its top-132
        (30, 36_864, 132, 132),
        (9, 12, 10, 10),  # a + b > population: at least 8 are shared by any draw
        (20, 835_584, 3_000, 3_000),  # the paper's counts
    ],
)
def test_hypergeom_sf_against_scipy(shared, population, a, b):
    want = sps.hypergeom.sf(shared - 1, population, a, b)
    assert hypergeom_sf(shared, population, a, b) == pytest.approx(want, rel=1e-6, abs=1e-300)


def test_hypergeom_sf_small_cases_by_hand():
    # 10 neurons, a fixed 3, a drawn 4: C(3,3)·C(7,1)/C(10,4) = 7/210
    assert hypergeom_sf(3, 10, 3, 4) == pytest.approx(7 / 210)
    # >= 2: (C(3,2)·C(7,2) + 7) / 210 = (63 + 7) / 210
    assert hypergeom_sf(2, 10, 3, 4) == pytest.approx(70 / 210)
    assert hypergeom_sf(0, 10, 3, 4) == 1.0
    assert hypergeom_sf(4, 10, 3, 4) == 0.0
    with pytest.raises(ValueError, match="0..10"):
        hypergeom_sf(1, 10, 11, 4)


def test_overlap_verdict_and_testable():
    rules = Rules()
    assert overlap_verdict(0.049, rules) == BEYOND_CHANCE
    assert overlap_verdict(0.05, rules) == NOT_BEYOND_CHANCE
    assert overlap_verdict(None, rules) == NOT_BEYOND_CHANCE
    # an ablation can only pass with min_discordant (5) baseline-correct prompts to lose
    assert [baseline_allows(k, rules) for k in (0, 4, 5, 40)] == [False, False, True, True]
    assert baseline_allows(2, dataclasses.replace(rules, min_discordant=2)) is True
