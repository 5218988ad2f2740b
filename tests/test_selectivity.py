"""Selectivity statistics against scikit-learn and numpy, ties and edge cases included."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from warehouse.analysis.selectivity import (
    SelectivityResult,
    sample_negatives,
    selectivity,
    selectivity_block,
    selectivity_sampled,
)
from warehouse.store.errors import WarehouseError

TOL = 1e-9


def reference(x: np.ndarray, y: np.ndarray, n_relations: int, masks: list[np.ndarray]) -> dict:
    """Loop of scikit-learn / numpy calls; masks[r] selects relation r's counted prompts."""
    shape = (n_relations, x.shape[1])
    out = {k: np.full(shape, np.nan) for k in ("ap", "auroc", "mp", "sp", "mn", "sn", "smd")}
    for r in range(n_relations):
        xs, pos = x[masks[r]].astype(np.float64), y[masks[r]] == r
        if pos.any():
            out["mp"][r], out["sp"][r] = xs[pos].mean(0), xs[pos].std(0)
        if (~pos).any():
            out["mn"][r], out["sn"][r] = xs[~pos].mean(0), xs[~pos].std(0)
        if not pos.any() or pos.all():
            continue
        for j in range(x.shape[1]):
            out["ap"][r, j] = average_precision_score(pos, xs[:, j])
            out["auroc"][r, j] = roc_auc_score(pos, xs[:, j])
        n1, n0 = pos.sum(), (~pos).sum()
        pooled = np.sqrt((n1 * out["sp"][r] ** 2 + n0 * out["sn"][r] ** 2) / (n1 + n0))
        diff = out["mp"][r] - out["mn"][r]
        out["smd"][r] = np.where(pooled > 0, diff / np.where(pooled > 0, pooled, 1), 0.0)
    return out


def assert_matches(res: SelectivityResult, ref: dict) -> None:
    for name, key in [
        ("ap", "ap"),
        ("auroc", "auroc"),
        ("mean_pos", "mp"),
        ("std_pos", "sp"),
        ("mean_neg", "mn"),
        ("std_neg", "sn"),
        ("smd", "smd"),
    ]:
        got = getattr(res, name)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, ref[key], rtol=0, atol=TOL, err_msg=name)


def full_masks(y: np.ndarray, n_relations: int, mask: np.ndarray | None = None) -> list:
    keep = np.ones(len(y), bool) if mask is None else mask
    return [keep] * n_relations


def tied_data(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """float16 columns of every tie pattern: 2 levels, few levels, constant, +-0, raw."""
    x = rng.standard_normal((n, b)).astype(np.float32)
    x[:, 0] = (x[:, 0] > 0.3).astype(np.float32)
    x[:, 1] = np.round(x[:, 1] * 2) / 2
    x[:, 2] = 0.75
    x[:, 3] = np.where(rng.random(n) < 0.5, -0.0, 0.0)
    x[:, 4] = np.where(rng.random(n) < 0.5, 0.0, 2.0) * np.where(rng.random(n) < 0.5, -1, 1)
    return x.astype(np.float16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8])
def test_random_data_matches_sklearn(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((240, 12)) * 3).astype(dtype)
    y = rng.integers(0, 4, 240)
    res = selectivity_block(x, y, 4)
    assert_matches(res, reference(x, y, 4, full_masks(y, 4)))
    np.testing.assert_array_equal(res.n_pos, np.bincount(y, minlength=4))
    np.testing.assert_array_equal(res.n_neg, 240 - np.bincount(y, minlength=4))


def test_many_prompts_use_wide_packed_keys():
    # 20,000 prompts need 15 bits per rank, so the (label, end, start) sort goes 64-bit.
    rng = np.random.default_rng(8)
    x = np.round(rng.standard_normal((20_000, 2)), 1).astype(np.float32)
    y = rng.integers(0, 3, 20_000)
    assert_matches(selectivity_block(x, y, 3), reference(x, y, 3, full_masks(y, 3)))


def test_heavy_ties_float16_match_sklearn():
    rng = np.random.default_rng(1)
    x = tied_data(rng, 300, 9)
    y = rng.integers(0, 5, 300)
    assert_matches(selectivity_block(x, y, 5), reference(x, y, 5, full_masks(y, 5)))


def test_constant_column_is_chance_with_zero_std_and_zero_smd():
    y = np.array([0, 0, 1, 1, 1, 2])
    x = np.full((6, 1), 3.5, dtype=np.float16)
    res = selectivity_block(x, y, 3)
    # One tie group: precision is the base rate n_pos/n, AUROC is 1/2.
    np.testing.assert_allclose(res.ap[:, 0], [2 / 6, 3 / 6, 1 / 6], atol=1e-15)
    np.testing.assert_array_equal(res.auroc[:, 0], [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(res.std_pos[:, 0], 0.0)
    np.testing.assert_array_equal(res.std_neg[:, 0], 0.0)
    np.testing.assert_array_equal(res.smd[:, 0], 0.0)


def test_smd_uses_pooled_population_std():
    y = np.array([0, 0, 1, 1, 1, 1])
    x = np.array([[1.0], [3.0], [0.0], [0.0], [1.0], [1.0]], dtype=np.float32)
    res = selectivity_block(x, y, 2)
    # pos: mean 2, var 1; neg: mean 0.5, var 0.25; pooled = sqrt((2*1 + 4*0.25)/6).
    assert res.smd[0, 0] == pytest.approx(1.5 / np.sqrt(0.5), abs=1e-12)
    assert res.smd[1, 0] == pytest.approx(-1.5 / np.sqrt(0.5), abs=1e-12)
    assert res.std_pos[0, 0] == pytest.approx(1.0)
    assert res.std_neg[0, 0] == pytest.approx(0.5)


def test_known_ap_and_auroc_values():
    # Scores 4 > 3 = 3 > 1 for labels pos, pos, neg, neg (tie between a pos and a neg).
    y = np.array([0, 0, 1, 1])
    x = np.array([[4.0], [3.0], [3.0], [1.0]], dtype=np.float16)
    res = selectivity_block(x, y, 2)
    # AP: threshold 4 -> P=1, R=1/2; threshold 3 -> P=2/3, R=1: 0.5*1 + 0.5*2/3.
    assert res.ap[0, 0] == pytest.approx(0.5 + 1 / 3, abs=1e-15)
    # AUROC: pairs (4,3) (4,1) (3,1) win, (3,3) ties -> 3.5 / 4.
    assert res.auroc[0, 0] == pytest.approx(3.5 / 4, abs=1e-15)
    assert res.auroc[1, 0] == pytest.approx(0.5 / 4, abs=1e-15)


def test_mask_restricts_prompts():
    rng = np.random.default_rng(2)
    x = tied_data(rng, 200, 8)
    y = rng.integers(0, 3, 200)
    mask = rng.random(200) < 0.6
    res = selectivity_block(x, y, 3, mask)
    assert_matches(res, reference(x, y, 3, full_masks(y, 3, mask)))
    np.testing.assert_array_equal(res.n_pos, np.bincount(y[mask], minlength=3))


def test_sample_negatives_draws_from_other_relations():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 400)
    mask = rng.random(400) < 0.9
    m = sample_negatives(y, 1, 2.0, seed=7, mask=mask)
    n_pos = (mask & (y == 1)).sum()
    assert (m & (y == 1)).sum() == n_pos  # every counted positive
    assert (m & (y != 1)).sum() == 2 * n_pos
    assert not (m & ~mask).any()
    np.testing.assert_array_equal(m, sample_negatives(y, 1, 2.0, seed=7, mask=mask))
    assert not np.array_equal(m, sample_negatives(y, 1, 2.0, seed=8, mask=mask))
    # Fewer candidates than asked for: all of them.
    few = sample_negatives(np.array([0, 0, 0, 1]), 0, 4.0, seed=0)
    np.testing.assert_array_equal(few, [True, True, True, True])
    # Rounded to the nearest prompt count.
    assert (sample_negatives(np.array([0, 0, 1, 1, 1, 1]), 0, 0.75, seed=0)).sum() == 2 + 2


def test_sampled_mode_matches_sklearn_per_relation():
    rng = np.random.default_rng(4)
    x = tied_data(rng, 360, 7)
    y = rng.integers(0, 6, 360)
    mask = rng.random(360) < 0.8
    res = selectivity_sampled(x, y, 6, ratio=4.0, seed=11, mask=mask)
    masks = [sample_negatives(y, r, 4.0, 11, mask) for r in range(6)]
    assert_matches(res, reference(x, y, 6, masks))
    for r in range(6):
        assert res.n_pos[r] == (masks[r] & (y == r)).sum()
        assert res.n_neg[r] == (masks[r] & (y != r)).sum()


def test_blocks_in_equal_one_block_out():
    rng = np.random.default_rng(5)
    x = tied_data(rng, 150, 40)
    y = rng.integers(0, 3, 150)
    whole = selectivity_block(x, y, 3)
    blocks = [(o, x[:, o : o + 7]) for o in range(0, 40, 7)]
    for threads in (1, 2, 3):
        got = list(selectivity(iter(blocks), y, 3, threads=threads))
        assert [o for o, _ in got] == [o for o, _ in blocks]
        joined = SelectivityResult.concat([r for _, r in got])
        for name in ("ap", "auroc", "mean_pos", "std_pos", "mean_neg", "std_neg", "smd"):
            np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name))
    small = selectivity_block(x, y, 3, block_size=3, threads=2)
    np.testing.assert_array_equal(small.ap, whole.ap)


def test_stream_stops_early_without_hanging():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((50, 30)).astype(np.float16)
    y = rng.integers(0, 2, 50)
    stream = selectivity(((o, x[:, o : o + 5]) for o in range(0, 30, 5)), y, 2, threads=2)
    offset, first = next(stream)
    stream.close()
    assert offset == 0 and first.n_neurons == 5


def test_relation_without_positives_or_negatives_is_nan():
    y = np.array([0, 0, 0, 2, 2])
    x = np.arange(10, dtype=np.float16).reshape(5, 2)
    res = selectivity_block(x, y, 3)
    for name in ("ap", "auroc", "smd", "mean_pos", "std_pos"):
        assert np.isnan(getattr(res, name)[1]).all(), name
    np.testing.assert_allclose(res.mean_neg[1], x.astype(float).mean(0))
    assert res.n_pos[1] == 0 and res.n_neg[1] == 5
    # Masking away every other relation leaves relation 0 without negatives.
    only0 = selectivity_block(x, y, 3, mask=y == 0)
    for name in ("ap", "auroc", "smd", "mean_neg", "std_neg"):
        assert np.isnan(getattr(only0, name)[0]).all(), name
    np.testing.assert_allclose(only0.mean_pos[0], x[:3].astype(float).mean(0))
    # Everything masked out: all NaN, no error.
    none = selectivity_block(x, y, 3, mask=np.zeros(5, bool))
    assert np.isnan(none.ap).all() and (none.n_pos == 0).all()


@pytest.mark.parametrize(
    "x, y, mask, match",
    [
        (np.array([[np.nan], [1.0]], np.float16), [0, 1], None, "NaN or infinity"),
        (np.array([[np.inf], [1.0]], np.float32), [0, 1], None, "NaN or infinity"),
        (np.zeros((2, 1), np.float32), [0, 2], None, "labels must lie"),
        (np.zeros((2, 1), np.float32), [0.0, 1.0], None, "integers"),
        (np.zeros((3, 1), np.float32), [0, 1], None, "prompts=2"),
        (np.zeros((2, 1), np.float32), [0, 1], np.array([1, 0]), "boolean"),
    ],
)
def test_bad_input_raises(x, y, mask, match):
    with pytest.raises(WarehouseError, match=match):
        selectivity_block(x, np.array(y), 2, mask)


def test_bad_ratio_raises():
    with pytest.raises(WarehouseError, match="ratio"):
        sample_negatives(np.array([0, 1]), 0, 0.0, seed=0)
    with pytest.raises(WarehouseError, match="seed"):
        sample_negatives(np.array([0, 1]), 0, 1.0, seed=-1)


def test_randomized_small_shapes():
    rng = np.random.default_rng(7)
    for trial in range(60):
        n = int(rng.integers(2, 40))
        b = int(rng.integers(1, 6))
        r = int(rng.integers(1, 5))
        levels = int(rng.choice([2, 3, 8, 1000]))
        dtype = [np.float16, np.float32][trial % 2]
        x = (rng.integers(0, levels, (n, b)) * rng.choice([-1.0, 0.5])).astype(dtype)
        y = rng.integers(0, r, n)
        mask = rng.random(n) < 0.8 if trial % 3 == 0 else None
        if trial % 4 == 1:
            ratio, seed = float(rng.choice([0.5, 1.0, 4.0])), int(rng.integers(100))
            res = selectivity_sampled(x, y, r, ratio, seed, mask, block_size=2)
            masks = [sample_negatives(y, k, ratio, seed, mask) for k in range(r)]
        else:
            res = selectivity_block(x, y, r, mask, block_size=int(rng.integers(1, 4)))
            masks = full_masks(y, r, mask)
        assert_matches(res, reference(x, y, r, masks))
