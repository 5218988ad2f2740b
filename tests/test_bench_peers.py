"""bench/peers.py's paired interval against scipy's quantile test and the binomial sums, and
its skip of a peer that is not installed (the peers themselves are never needed here)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as sps

PATH = Path(__file__).resolve().parents[1] / "bench" / "peers.py"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers_bench", PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["peers_bench"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["peers_bench"]


def _coverage(n: int, k: int) -> float:
    """P(k-th smallest <= median <= k-th largest) = P(k <= B <= n - k), B ~ Bin(n, 1/2)."""
    return sum(math.comb(n, j) for j in range(k, n - k + 1)) / 2**n


@pytest.mark.parametrize("n", range(1, 31))
def test_median_interval_is_scipys_quantile_test_interval(peers, n: int):
    x = np.random.default_rng(n).lognormal(size=n)
    got = peers.median_interval(x)
    ref = sps.quantile_test(x, q=np.median(x), p=0.5).confidence_interval(0.95)
    assert got.median == np.median(x)
    if np.isnan(ref.low):
        assert (got.low, got.high, got.coverage) == (None, None, None)
        return
    assert (got.low, got.high) == (ref.low, ref.high)
    k = int(np.searchsorted(np.sort(x), ref.low)) + 1  # ref.low is the k-th smallest
    assert got.coverage == pytest.approx(_coverage(n, k), rel=1e-12)
    assert got.coverage >= 0.95


def test_median_interval_of_nine_rounds(peers):
    """9 ratios: the 2nd smallest and 2nd largest, coverage 1 - 2 * (1 + 9) / 512."""
    got = peers.median_interval([1.3, 0.9, 1.1, 1.0, 1.5, 0.7, 1.2, 0.8, 1.4])
    assert got == peers.Interval(1.1, 0.8, 1.4, 492 / 512)


def test_median_interval_needs_six_values_and_at_least_one(peers):
    assert peers.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == peers.Interval(3.0, None, None, None)
    assert peers.median_interval([4.0, 1.0, 3.0, 2.0, 6.0, 5.0]) == peers.Interval(
        3.5, 1.0, 6.0, 62 / 64
    )
    with pytest.raises(ValueError, match="no values"):
        peers.median_interval([])


def test_a_missing_peer_is_skipped_with_one_line(peers, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        peers.importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("nnsight", "transformer_lens") else real(name, *a),
    )
    args = peers._parser().parse_args(["--ways", "nnsight,transformer-lens"])
    assert peers.build_ways(args, None, None) == []
    assert capsys.readouterr().out.splitlines() == [
        "nnsight           skipped: nnsight is not installed (pip install nnsight)",
        "transformer-lens  skipped: transformer_lens is not installed (pip install "
        "transformer-lens)",
    ]
