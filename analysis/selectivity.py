"""Per-neuron relation selectivity: AP, AUROC, moments and standardized mean difference.

Input is a block of pooled responses `X` (prompts, neurons) and one integer relation label
per prompt. For every relation r and neuron j the neuron's responses are scores for "the
prompt is of relation r" against every other counted prompt (or, in the paper's sampled
mode, against a seeded sample of other relations' prompts).

Definitions (every output array is float64 of shape (n_relations, n_neurons)):
- `ap`: scikit-learn's `average_precision_score` (step-wise, tied scores grouped at one
  threshold). Computed from ranks (DESIGN 4b): with rank_max(p) = number of prompts whose
  value is >= p's value, AP = mean over r's prompts p of
  rank_max(p among r's prompts) / rank_max(p among all prompts).
- `auroc`: scikit-learn's `roc_auc_score` = Mann-Whitney U / (n_pos * n_neg), from average
  ranks, so a tie between a positive and a negative counts 1/2.
- `mean_pos`, `std_pos`, `mean_neg`, `std_neg`: population moments (ddof=0, like
  `np.std`'s default) of the responses on r's prompts and on the negatives.
- `smd`: (mean_pos - mean_neg) / s_pooled with the pooled within-group population std
  s_pooled = sqrt((n_pos * std_pos**2 + n_neg * std_neg**2) / (n_pos + n_neg)); 0 where
  s_pooled is 0 (every response within each group equal), never inf.

Empty sides: a relation with no positives or no negatives (after the mask) gets NaN for
`ap`, `auroc` and `smd`, and NaN moments on the empty side; other relations are unaffected.
A run over many relations should not die because one filter emptied one relation, and NaN
sorts last in any "top neurons by AP" query. Non-finite responses raise `WarehouseError`
(scikit-learn rejects them too, and a NaN has no rank).

Speed (no Python loop over neurons; a (neurons, prompts) chunk is one numpy call each):
1. responses become unsigned integer keys whose order is the descending response order;
2. one sort of (key, label) packed into one integer per row gives each neuron's sorted
   labels; tie groups come from adjacent key differences, and a running min/max maps each
   position to its group's end (rank_max among all prompts) and start;
3. one sort of (label, end, start) packed likewise puts every relation's prompts in the
   same columns for every neuron, in descending order, each with its global ranks; a
   running min inside those segments gives rank_max within the relation, and segment sums
   give AP and the Mann-Whitney rank sums of all relations at once.
Packing sorts the payload along with the key, so no argsort + gather is needed (numpy's
SIMD sort of 32/64-bit integers is ~2x faster than argsort plus gathers here).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from warehouse.store.errors import WarehouseError

# Neurons per inner step. 256 to 1,024 measured alike (2 cores, 2,000 prompts); 256 keeps
# one step's int32/int64 work arrays at ~10 MB whatever the block size.
CHUNK_NEURONS = 256
# Neurons per block handed to a thread by `selectivity_block`: large enough that the
# per-block set-up (row gather, tiled transpose) is amortized, small enough to bound memory.
DEFAULT_BLOCK_SIZE = 2048


@dataclass(frozen=True)
class SelectivityResult:
    """Statistics of one neuron block; arrays are (n_relations, n_neurons) float64."""

    ap: np.ndarray
    auroc: np.ndarray
    mean_pos: np.ndarray
    std_pos: np.ndarray
    mean_neg: np.ndarray
    std_neg: np.ndarray
    smd: np.ndarray
    n_pos: np.ndarray  # (n_relations,) int64: positives counted per relation
    n_neg: np.ndarray  # (n_relations,) int64: negatives counted per relation

    @property
    def n_neurons(self) -> int:
        return self.ap.shape[1]

    @staticmethod
    def concat(parts: list[SelectivityResult]) -> SelectivityResult:
        """Join results of consecutive neuron blocks (same relations, same counts)."""
        if not parts:
            raise WarehouseError("no selectivity blocks to join")
        arrays = {
            name: np.concatenate([getattr(p, name) for p in parts], axis=1) for name in _STAT_NAMES
        }
        return SelectivityResult(**arrays, n_pos=parts[0].n_pos, n_neg=parts[0].n_neg)


_STAT_NAMES = ("ap", "auroc", "mean_pos", "std_pos", "mean_neg", "std_neg", "smd")


@dataclass(frozen=True)
class _Problem:
    """One positives-vs-negatives layout of the prompts, shared by every neuron block.

    The counted prompts are reordered so that each local label's prompts are contiguous;
    `emit` says which local label becomes which output relation. The full mode is one
    problem with a local label per relation; the sampled mode is one binary problem
    (0 = sampled negatives, 1 = positives) per relation, as each has its own negatives.
    """

    rows: np.ndarray  # (n,) intp: prompt indices, grouped by label
    labels: np.ndarray  # (n,) uint32: local label of each row, non-decreasing
    counts: np.ndarray  # (k,) int64: rows per local label
    seg_start: np.ndarray  # (n,) int32: first position of each row's label segment
    nonempty: np.ndarray  # (k_nonempty,) local labels with at least one row
    seg_starts: np.ndarray  # (k_nonempty,) first position of each non-empty label
    breaks: np.ndarray  # seg_starts without 0: where a label segment begins mid-row
    label_bits: int  # bits that hold a local label in packed sort keys
    emit: tuple[tuple[int, int], ...]  # (local label, output relation)

    @property
    def n(self) -> int:
        return len(self.rows)

    @staticmethod
    def build(rows: np.ndarray, labels: np.ndarray, k: int, emit) -> _Problem:
        by_label = np.argsort(labels, kind="stable")
        labels = labels[by_label]
        counts = np.bincount(labels, minlength=k).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return _Problem(
            rows=np.asarray(rows, dtype=np.intp)[by_label],
            labels=labels.astype(np.uint32),
            counts=counts,
            seg_start=np.repeat(starts, counts).astype(np.int32),
            nonempty=np.flatnonzero(counts),
            seg_starts=starts[counts > 0],
            breaks=starts[(counts > 0) & (starts > 0)],
            label_bits=max(1, (k - 1).bit_length()),
            emit=tuple(emit),
        )


# ---------------------------------------------------------------- validation and set-up


def _check_mask(mask: np.ndarray | None, n_prompts: int) -> np.ndarray:
    if mask is None:
        return np.ones(n_prompts, dtype=bool)
    keep = np.asarray(mask)
    if keep.dtype != bool or keep.shape != (n_prompts,):
        raise WarehouseError(
            f"mask must be a boolean array of shape ({n_prompts},), got {keep.dtype} {keep.shape}"
        )
    return keep


def _check_labels(
    y: np.ndarray, n_relations: int | None, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 (checked to lie in 0..n_relations-1 when given) and the prompt mask."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise WarehouseError(f"labels must be 1-D, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise WarehouseError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if n_relations is not None:
        if n_relations < 1:
            raise WarehouseError(f"n_relations must be >= 1, got {n_relations}")
        if y.size and (y.min() < 0 or y.max() >= n_relations):
            raise WarehouseError(
                f"labels must lie in 0..{n_relations - 1}, got {y.min()}..{y.max()}"
            )
    return y, _check_mask(mask, len(y))


def sample_negatives(
    y: np.ndarray, relation: int, ratio: float, seed: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Boolean prompt mask: every (masked-in) prompt of `relation` plus negatives.

    The negatives are round(ratio * n_pos) prompts (halves up) of other relations drawn
    without replacement from the masked-in prompts (all of them if there are fewer). The
    generator is seeded with (seed, relation), so each relation gets its own reproducible
    draw from one seed.
    """
    y, keep = _check_labels(y, None, mask)
    if not ratio > 0:
        raise WarehouseError(f"negative ratio must be > 0, got {ratio}")
    if relation < 0 or seed < 0:
        raise WarehouseError(f"relation and seed must be >= 0, got {relation} and {seed}")
    positives = keep & (y == relation)
    candidates = np.flatnonzero(keep & (y != relation))
    # A Python float: a huge ratio (ratio:1e308) is inf and takes every candidate.
    want = float(ratio) * int(positives.sum()) + 0.5
    n_take = len(candidates) if want >= len(candidates) else int(want)
    rng = np.random.default_rng([seed, relation])
    chosen = rng.choice(candidates, size=n_take, replace=False)
    out = positives.copy()
    out[chosen] = True
    return out


def _full_problem(y: np.ndarray, n_relations: int, mask: np.ndarray | None) -> list[_Problem]:
    y, keep = _check_labels(y, n_relations, mask)
    rows = np.flatnonzero(keep)
    emit = [(r, r) for r in range(n_relations)]
    return [_Problem.build(rows, y[rows], n_relations, emit)]


def _sampled_problems(
    y: np.ndarray, n_relations: int, ratio: float, seed: int, mask: np.ndarray | None
) -> list[_Problem]:
    y, keep = _check_labels(y, n_relations, mask)
    problems = []
    for r in range(n_relations):
        rows = np.flatnonzero(sample_negatives(y, r, ratio, seed, keep))
        problems.append(_Problem.build(rows, (y[rows] == r).astype(np.int64), 2, [(1, r)]))
    return problems


# ---------------------------------------------------------------------------- the maths


def _transpose(x: np.ndarray) -> np.ndarray:
    """Contiguous x.T of a (prompts, neurons) block, copied in tiles of 16 neurons.

    A plain strided copy misses the cache on every element (measured 5x slower for a
    2,000 x 2,048 float16 block); copying 16-neuron rows first keeps both steps local.
    """
    n, b = x.shape
    tile = 16
    main = b - b % tile
    out = np.empty((b, n), dtype=x.dtype)
    if main:
        tiles = np.ascontiguousarray(x[:, :main].reshape(n, main // tile, tile).transpose(1, 0, 2))
        out[:main] = tiles.transpose(0, 2, 1).reshape(main, n)
    out[main:] = x[:, main:].T
    return out


def _keys_and_values(xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From (neurons, prompts) responses: unsigned sort keys and float64 values.

    Ascending keys are descending responses, and keys are equal exactly where responses
    are (-0.0 and +0.0 tie, as in scikit-learn). Integer keys let the sorts below carry a
    label or rank in their low bits.
    """
    values = xt.astype(np.float64)
    if xt.dtype not in (np.float16, np.float32):
        xt = values  # float64 keys are exact for every other real dtype we accept
    width = xt.dtype.itemsize * 8
    u = xt.view(np.dtype(f"uint{width}")).copy()
    sign = u.dtype.type(1 << (width - 1))
    u[u == sign] = 0  # -0.0 -> +0.0
    # Sign set: a larger pattern is more negative, already later in descending order.
    # Sign clear: a larger pattern is larger, so flip the other bits (u -> low_mask - u).
    flip = u >> (width - 1)
    flip -= 1  # all ones where the sign is clear, 0 where set
    flip &= sign - 1
    u ^= flip
    return u, values


def _packed_dtype(bits: int) -> np.dtype | None:
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64) if bits <= 64 else None


def _sort_with_labels(
    keys: np.ndarray, labels: np.ndarray, label_bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row of keys sorted, with the label of each column carried along.

    Sorting (key << label_bits | label) moves the label without an argsort and a gather
    (numpy's SIMD sort of 32/64-bit integers measured ~2x faster than argsort + gathers);
    ties come out ordered by label, which the tie grouping below does not mind.
    """
    dtype = _packed_dtype(keys.dtype.itemsize * 8 + label_bits)
    if dtype is None:  # float64 keys: no room for the label
        order = np.argsort(keys, axis=1)
        return np.take_along_axis(keys, order, axis=1), labels[order]
    packed = keys.astype(dtype) << dtype.type(label_bits)
    packed |= labels.astype(dtype)
    packed.sort(axis=1)
    return packed >> dtype.type(label_bits), packed & dtype.type((1 << label_bits) - 1)


def _run_end(new: np.ndarray) -> np.ndarray:
    """Exclusive end of each position's run; new[:, i] marks a run starting at i + 1."""
    b, n1 = new.shape
    n = n1 + 1
    end = np.empty((b, n), dtype=np.int32)
    end[:, -1] = n
    # i + 1 where a run starts there, else n; then a running minimum from the right.
    np.multiply(new, np.arange(1 - n, 0, dtype=np.int32), out=end[:, :-1])
    end[:, :-1] += n
    backwards = end[:, ::-1]
    np.minimum.accumulate(backwards, axis=1, out=backwards)
    return end


def _run_start(new: np.ndarray) -> np.ndarray:
    """First position of each position's run; new[:, i] marks a run starting at i + 1."""
    b, n1 = new.shape
    start = np.zeros((b, n1 + 1), dtype=np.int32)
    np.multiply(new, np.arange(1, n1 + 1, dtype=np.int32), out=start[:, 1:])
    return np.maximum.accumulate(start, axis=1, out=start)


def _rank_sums(keys: np.ndarray, prob: _Problem) -> tuple[np.ndarray, np.ndarray]:
    """Per non-empty local label, from two sorts per neuron: two (b, k_nonempty) arrays.

    ap_sum[:, l] = sum over l's rows of rank_max within l / rank_max among all rows;
    rank2_sum[:, l] = sum over l's rows of (end + start) of their tie group among all rows
    (twice the ascending average rank is 2n + 1 - end - start).
    """
    n = prob.n
    sorted_keys, sorted_labels = _sort_with_labels(keys, prob.labels, prob.label_bits)
    new = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    end = _run_end(new)  # exclusive end of the tie group = rank_max among all rows
    start = _run_start(new)
    # Sort (label, end, start): label segments land at the same columns for every neuron,
    # descending responses inside each, and each row's global group rides along.
    bits = n.bit_length()
    dtype = _packed_dtype(prob.label_bits + 2 * bits)
    if dtype is None:
        raise WarehouseError(f"too many prompts ({n:,}) for one selectivity problem")
    packed = sorted_labels.astype(dtype) << dtype.type(2 * bits)
    packed |= end.astype(dtype) << dtype.type(bits)
    packed |= start.astype(dtype)
    packed.sort(axis=1)
    low = dtype.type((1 << bits) - 1)
    end_p = ((packed >> dtype.type(bits)) & low).astype(np.int32)
    start_p = (packed & low).astype(np.int32)
    # Inside a label segment, two rows tie iff their global tie group (its end) is equal.
    new_p = end_p[:, 1:] != end_p[:, :-1]
    new_p[:, prob.breaks - 1] = True
    rank_in_label = _run_end(new_p) - prob.seg_start
    ap_sum = np.add.reduceat(rank_in_label / end_p, prob.seg_starts, axis=1)
    start_p += end_p
    rank2_sum = np.add.reduceat(start_p, prob.seg_starts, axis=1, dtype=np.int64)
    return ap_sum, rank2_sum


def _moments(values: np.ndarray, prob: _Problem) -> tuple[np.ndarray, np.ndarray]:
    """Per non-empty local label: sums and within-label sums of squared deviations.

    Two-pass (mean, then squared deviations) keeps a constant group's variance exactly 0
    (float16 sums are exact in float64), which the "smd = 0 where std is 0" rule needs.
    """
    b = values.shape[0]
    k = len(prob.seg_starts)
    sums = np.empty((b, k))
    ss = np.empty((b, k))
    for i, (s, c) in enumerate(zip(prob.seg_starts, prob.counts[prob.nonempty], strict=True)):
        seg = values[:, s : s + c]
        sums[:, i] = seg.sum(axis=1)
        dev = seg - (sums[:, i] / c)[:, None]
        ss[:, i] = np.einsum("ij,ij->i", dev, dev)
    return sums, ss


def _solve(x_all: np.ndarray, prob: _Problem) -> dict[int, dict[str, np.ndarray]]:
    """All statistics of one problem for a (prompts, b) block: {relation: {name: (b,)}}."""
    b = x_all.shape[1]
    n, counts = prob.n, prob.counts
    k = len(counts)
    if n == 0:
        return {rel: {s: np.full(b, np.nan) for s in _STAT_NAMES} for _, rel in prob.emit}
    xt = _transpose(x_all[prob.rows])  # (b, n), rows grouped by label
    if xt.dtype == np.float16:
        if ((xt.view(np.uint16) & 0x7C00) == 0x7C00).any():
            raise WarehouseError("responses contain NaN or infinity")
    elif not np.isfinite(xt).all():
        raise WarehouseError("responses contain NaN or infinity")
    ap_sum, rank2_sum, sums, ss = (np.zeros((k, b)) for _ in range(4))
    ne = prob.nonempty
    for c in range(0, b, CHUNK_NEURONS):
        cols = slice(c, c + CHUNK_NEURONS)
        keys, values = _keys_and_values(xt[cols])
        ap_c, r2_c = _rank_sums(keys, prob)
        ap_sum[ne, cols], rank2_sum[ne, cols] = ap_c.T, r2_c.T
        sums_c, ss_c = _moments(values, prob)
        sums[ne, cols], ss[ne, cols] = sums_c.T, ss_c.T
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    off = 1.0 - np.eye(k)  # sums over the other labels without subtracting (no cancellation)
    out = {}
    for lab, rel in prob.emit:
        n_pos = int(counts[lab])
        n_neg = n - n_pos
        stats = dict.fromkeys(_STAT_NAMES, np.full(b, np.nan))
        if n_pos:
            var_pos = ss[lab] / n_pos
            stats["mean_pos"], stats["std_pos"] = means[lab], np.sqrt(var_pos)
        if n_neg:
            # Negatives by the law of total variance over the other labels' segments.
            mean_neg = off[lab] @ sums / n_neg
            between = counts[:, None] * (means - mean_neg) ** 2
            var_neg = (off[lab] @ ss + off[lab] @ between) / n_neg
            stats["mean_neg"], stats["std_neg"] = mean_neg, np.sqrt(var_neg)
        if n_pos and n_neg:
            stats["ap"] = ap_sum[lab] / n_pos
            # Mann-Whitney U; the sum of ascending average ranks is (n_pos(2n+1) - rank2)/2.
            u = (n_pos * (2 * n + 1) - rank2_sum[lab]) / 2 - n_pos * (n_pos + 1) / 2
            stats["auroc"] = u / (n_pos * n_neg)
            pooled = np.sqrt((n_pos * var_pos + n_neg * var_neg) / n)
            diff = means[lab] - mean_neg
            stats["smd"] = np.divide(diff, pooled, out=np.zeros(b), where=pooled > 0)
        out[rel] = stats
    return out


def _block_result(
    x: np.ndarray, problems: list[_Problem], n_relations: int, n_prompts: int
) -> SelectivityResult:
    if x.ndim != 2 or x.shape[0] != n_prompts:
        raise WarehouseError(
            f"response block must be (prompts={n_prompts}, neurons), got shape {x.shape}"
        )
    b = x.shape[1]
    arrays = {s: np.full((n_relations, b), np.nan) for s in _STAT_NAMES}
    n_pos = np.zeros(n_relations, dtype=np.int64)
    n_neg = np.zeros(n_relations, dtype=np.int64)
    for prob in problems:
        for rel, stats in _solve(x, prob).items():
            for s in _STAT_NAMES:
                arrays[s][rel] = stats[s]
        for lab, rel in prob.emit:
            n_pos[rel] = prob.counts[lab]
            n_neg[rel] = prob.n - prob.counts[lab]
    return SelectivityResult(**arrays, n_pos=n_pos, n_neg=n_neg)


# ------------------------------------------------------------------------------ the API


def selectivity(
    blocks: Iterable[tuple[int, np.ndarray]],
    y: np.ndarray,
    n_relations: int,
    mask: np.ndarray | None = None,
    threads: int = 2,
    *,
    ratio: float | None = None,
    seed: int = 0,
) -> Iterator[tuple[int, SelectivityResult]]:
    """Stream statistics over neuron blocks: (offset, (prompts, b) responses) in, in order.

    `mask` selects the counted prompts. With `ratio`, each relation's negatives are
    `sample_negatives(y, r, ratio, seed, mask)` (the paper's mode) instead of every other
    counted prompt. Numpy releases the GIL in sorts and gathers, so `threads` blocks are
    computed at once; at most threads + 1 blocks are held, so memory is bounded by the
    block size, not by the number of neurons.
    """
    if ratio is None:
        problems = _full_problem(y, n_relations, mask)
    else:
        problems = _sampled_problems(y, n_relations, ratio, seed, mask)
    return _stream(blocks, problems, n_relations, len(y), threads)


def _stream(
    blocks: Iterable[tuple[int, np.ndarray]],
    problems: list[_Problem],
    n_relations: int,
    n_prompts: int,
    threads: int,
) -> Iterator[tuple[int, SelectivityResult]]:
    def run(x: np.ndarray) -> SelectivityResult:
        return _block_result(np.asarray(x), problems, n_relations, n_prompts)

    if threads <= 1:
        for offset, x in blocks:
            yield offset, run(x)
        return
    pending: deque[tuple[int, Future]] = deque()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        try:
            for offset, x in blocks:
                pending.append((offset, pool.submit(run, x)))
                if len(pending) > threads:
                    done_offset, fut = pending.popleft()
                    yield done_offset, fut.result()
            while pending:
                done_offset, fut = pending.popleft()
                yield done_offset, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


def _column_blocks(x: np.ndarray, block_size: int) -> Iterator[tuple[int, np.ndarray]]:
    if block_size < 1:
        raise WarehouseError(f"block_size must be >= 1, got {block_size}")
    for start in range(0, x.shape[1], block_size):
        yield start, x[:, start : start + block_size]


def selectivity_block(
    X: np.ndarray,
    y: np.ndarray,
    n_relations: int,
    mask: np.ndarray | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    threads: int = 1,
) -> SelectivityResult:
    """Statistics of every neuron of an in-memory (prompts, neurons) response array.

    Work memory is bounded by `block_size` neurons per thread.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise WarehouseError(f"responses must be 2-D (prompts, neurons), got shape {X.shape}")
    parts = [
        r for _, r in selectivity(_column_blocks(X, block_size), y, n_relations, mask, threads)
    ]
    if not parts:  # zero neurons
        return _block_result(X, _full_problem(y, n_relations, mask), n_relations, len(y))
    return SelectivityResult.concat(parts)


def selectivity_sampled(
    X: np.ndarray,
    y: np.ndarray,
    n_relations: int,
    ratio: float,
    seed: int,
    mask: np.ndarray | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    threads: int = 1,
) -> SelectivityResult:
    """The paper's mode: relation r against ratio x n_pos negatives sampled for r alone.

    Each relation is a separate binary problem over its own sampled prompts
    (`sample_negatives(y, r, ratio, seed, mask)`), still vectorized over neurons; the
    cost is about (1 + ratio) times one pass over all prompts.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise WarehouseError(f"responses must be 2-D (prompts, neurons), got shape {X.shape}")
    blocks = _column_blocks(X, block_size)
    parts = [
        r for _, r in selectivity(blocks, y, n_relations, mask, threads, ratio=ratio, seed=seed)
    ]
    if not parts:
        problems = _sampled_problems(y, n_relations, ratio, seed, mask)
        return _block_result(X, problems, n_relations, len(y))
    return SelectivityResult.concat(parts)
