"""`warehouse stats`: every neuron's selectivity for every relation, as one Parquet file per
(site, pooling, negatives).

For each relation r and neuron j, r's prompts of the chosen split are the positives and the
other relations' prompts the negatives (all of them, or `ratio:k` = k x n_pos sampled per
relation, the paper's mode). The neuron's pooled responses are its scores: AP (the paper's
expertise), AUROC, moments and SMD come from `selectivity` (analysis/selectivity.py), which
is exact to scikit-learn. Every statistic is computed once per language (positives and
negatives within that language) and once with all languages pooled (`language = "all"`).

Data flow, bounded by one slab of the responses array, never by the number of neurons:

    responses.zarr/<site>/<pooling>  --slab of one layer's neurons, all counted prompts-->
    (or, for a derived pooling, the per-token array it is derived from:
    store/derived_pooling.py)
    selectivity per language group   --(group, relation, neuron) stats-->  disk-backed arrays
    --per (relation, language): rank by AP-->  stats/<site>__<pooling>__<negatives>.parquet

Ranks never depend on neuron ids: equal APs are ordered by AUROC, then |SMD|, then a random
order seeded by the options' seed and the (relation, language) (`tie_order`), and every row
records how many neurons share its AP (`ap_ties`) and the best rank of that group (`ap_rank`).
With few positives hundreds of neurons reach AP = 1, and an id order would make "the top k"
the earliest layers.

`templates` restricts the counted prompts to a set of templates (the study's held-out
template check); such a file is stats/<stem>__tpl-<hash>.parquet, its rows say
`template_set = 'tpl-<hash>'` (else 'all') and its sidecar lists the templates.

The output is sorted by (relation, language, rank) and every (relation, language) starts a
new row group, so `WHERE relation = ... AND language = ... AND rank <= 3000` reads one row
group. A JSON sidecar records its cache key (store/fingerprint.py: the options, derived from
the warehouse's fingerprint, or with `filter_correct` from the baseline's), so a re-run with
the same inputs is a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from warehouse.analysis.selectivity import selectivity
from warehouse.store.arrays import NEURON_CHUNK, ArraySpec, from_storage, open_array
from warehouse.store.checksums import require_complete
from warehouse.store.derived_pooling import readable_specs
from warehouse.store.errors import FormatError, WarehouseError
from warehouse.store.files import remove_temp_entries
from warehouse.store.fingerprint import (
    CacheKey,
    is_current,
    result_fingerprint,
    sidecar_path,
    warehouse_fingerprint,
    write_sidecar,
)
from warehouse.store.format import (
    ALL,
    BASELINE_FILE,
    PROMPTS_FILE,
    SPLITS,
    STAT_NAMES,
    STATS_DIR,
    STATS_SCHEMA,
    STATS_STRINGS,
)
from warehouse.store.location import local_folder
from warehouse.store.lock import WriterLock
from warehouse.store.manifest import Manifest, load_manifest
from warehouse.store.progress import Progress
from warehouse.store.tables import ROW_GROUP_SIZE, read_table, warehouse_provenance
from warehouse.store.version import __version__

log = logging.getLogger(__name__)

ALL_LANGUAGES = ALL  # the language of rows over every language
ALL_TEMPLATES = ALL  # template_set of a file over every template
# How equal APs are ordered (recorded in each sidecar's options, so a file ranked another
# way is recomputed): AUROC, then |SMD| (both descending), then the seeded random order.
TIE_BREAK = "auroc desc, abs(smd) desc, seeded random"
SIDECAR_FORMAT = "relation-warehouse/stats"
STEP = "stats"  # the step name of its cache keys

# One slab holds every counted prompt of at most this many values (64 MiB as float16): a
# whole layer of SmolLM2 or Llama-2-7B for a few thousand prompts, a narrower neuron range
# when there are many prompts, so memory does not grow with the dataset either.
SLAB_VALUES = 1 << 25
MAX_SLAB_NEURONS = 4096


# ------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class StatsOptions:
    """Everything that determines one stats file's content (threads and progress do not)."""

    site: str
    pooling: str
    negatives: str  # "all" or "ratio:<k>", normalized by parse_negatives
    split: str
    seed: int  # the negative sampling (ratio mode) and the random order of exact ties
    per_language: bool
    filter_correct: bool
    templates: list[str] | None = None  # None: every template; else sorted, unique
    tie_break: str = TIE_BREAK

    @property
    def ratio(self) -> float | None:
        return parse_negatives(self.negatives)[1]

    @property
    def template_set(self) -> str:
        return template_set(self.templates)

    @property
    def stem(self) -> str:
        return _stem(self.site, self.pooling, self.negatives, self.template_set)


def template_set(templates: list[str] | None) -> str:
    """'all', or 'tpl-' + the first 12 hex digits of the sha256 of the sorted templates."""
    if templates is None:
        return ALL_TEMPLATES
    blob = "\n".join(sorted(set(templates))).encode()
    return "tpl-" + hashlib.sha256(blob).hexdigest()[:12]


def _stem(site: str, pooling: str, negatives: str, tset: str = ALL_TEMPLATES) -> str:
    # ':' is not allowed in Windows file names nor safe in URLs, so ratio:4 -> ratio-4.
    stem = f"{site}__{pooling}__{negatives.replace(':', '-')}"
    return stem if tset == ALL_TEMPLATES else f"{stem}__{tset}"


def parse_negatives(negatives: str) -> tuple[str, float | None]:
    """'all' -> ('all', None); 'ratio:4' / 'ratio:4.0' -> ('ratio:4', 4.0)."""
    if negatives == "all":
        return "all", None
    kind, _, value = negatives.partition(":")
    try:
        ratio = float(value) if kind == "ratio" else float("nan")
    except ValueError:
        ratio = float("nan")
    if not (ratio > 0 and np.isfinite(ratio)):
        raise WarehouseError(
            f"--negatives must be 'all' or 'ratio:K' with K > 0 (the paper uses ratio:4), "
            f"not {negatives!r}"
        )
    return f"ratio:{ratio:g}", ratio


def stats_path(
    root: Path, site: str, pooling: str, negatives: str, templates: list[str] | None = None
) -> Path:
    """The stats file of (site, pooling, negatives[, templates]):
    stats/<site>__<pooling>__<neg>[__tpl-<hash>].parquet."""
    stem = _stem(site, pooling, parse_negatives(negatives)[0], template_set(templates))
    return Path(root) / STATS_DIR / f"{stem}.parquet"


# ------------------------------------------------------------------------- the prompts


@dataclass(frozen=True)
class Design:
    """Which prompts count, their relation codes, and the language groups over them.

    Relation codes are indexes into `relations` (sorted names of the relations that have
    counted prompts); the sampled mode seeds relation r's draw with (seed, code of r).
    """

    rows: np.ndarray  # (n,) int64: prompt_row of each counted prompt, ascending
    prompt_ids: np.ndarray  # (n,) int64
    y: np.ndarray  # (n,) int64: relation code
    relations: list[str]
    groups: list[tuple[str, np.ndarray]]  # (language or "all", (n,) bool mask)


def design(
    root: Path,
    split: str,
    per_language: bool,
    filter_correct: bool,
    n_rows: int,
    templates: list[str] | None = None,
) -> Design:
    """The counted prompts of a warehouse for a split, optionally only baseline-correct ones
    and only those of the given templates."""
    if split not in SPLITS:
        raise WarehouseError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    t = read_table(
        root / PROMPTS_FILE,
        columns=["prompt_row", "prompt_id", "relation", "language", "split"],
    )
    rows = t.column("prompt_row").to_numpy().astype(np.int64)
    ids = t.column("prompt_id").to_numpy().astype(np.int64)
    rel = np.asarray(t.column("relation").to_pylist(), dtype=object)
    lang = np.asarray(t.column("language").to_pylist(), dtype=object)
    splits = np.asarray(t.column("split").to_pylist(), dtype=object)
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise FormatError(f"{root}/{PROMPTS_FILE}: prompt_row outside the responses array")
    keep = np.ones(len(rows), dtype=bool) if split == "all" else splits == split
    if not keep.any():
        raise WarehouseError(
            f"{root} has no {split!r} prompts (splits present: {', '.join(sorted(set(splits)))})"
        )
    if templates is not None:
        keep &= _of_templates(root, templates)
        if not keep.any():
            raise WarehouseError(f"no {split!r} prompt of {root} has one of these templates")
    if filter_correct:
        _check_answered(root, ids[keep], split)
        keep &= np.isin(ids, baseline_correct_ids(root))
        if not keep.any():
            raise WarehouseError(
                f"no {split!r} prompt of {root} was answered correctly in {BASELINE_FILE}"
            )
    order = np.argsort(rows[keep], kind="stable")
    rows, ids, rel, lang = (a[keep][order] for a in (rows, ids, rel, lang))
    relations = sorted(set(rel))
    code = {r: i for i, r in enumerate(relations)}
    y = np.fromiter((code[r] for r in rel), dtype=np.int64, count=len(rel))
    groups = [(ALL_LANGUAGES, np.ones(len(rows), dtype=bool))]
    if per_language:
        groups += [(g, lang == g) for g in sorted(set(lang))]
    return Design(rows=rows, prompt_ids=ids, y=y, relations=relations, groups=groups)


def _check_answered(root: Path, ids: np.ndarray, split: str) -> None:
    """A WarehouseError when the baseline lacks answers of some of these prompts (an eval
    answers only the prompts it scores), so a missing answer never counts as a wrong one."""
    t = read_table(_baseline(root), columns=["prompt_id"])
    have = t.column("prompt_id").to_numpy(zero_copy_only=False).astype(np.int64)
    lacking = int((~np.isin(ids, have)).sum())
    if lacking:
        raise WarehouseError(
            f"{BASELINE_FILE} answers {len(ids) - lacking} of the {len(ids)} {split!r} prompts "
            "counted here; run `warehouse eval W --baseline` to answer every prompt"
        )


def _of_templates(root: Path, templates: list[str]) -> np.ndarray:
    """Boolean mask over prompts.parquet's rows: the prompt's template is one of `templates`."""
    column = read_table(root / PROMPTS_FILE, columns=["template"]).column("template")
    have = np.asarray(column.to_pylist(), dtype=object)
    unknown = sorted(set(templates) - set(have))
    if unknown:
        raise WarehouseError(
            f"unknown template(s) {', '.join(map(repr, unknown))}; "
            f"this warehouse has {len(set(have))} templates"
        )
    return np.isin(have, list(templates))


def _baseline(root: Path) -> Path:
    path = root / BASELINE_FILE
    if not path.is_file():
        raise WarehouseError(
            "--filter-correct needs baseline answers: run `warehouse eval W --baseline` first"
        )
    return path


def _baseline_fingerprint(root: Path) -> str:
    """The baseline's fingerprint (its sidecar's): it covers the scoring rule its `correct`
    column was computed with."""
    fp = result_fingerprint(_baseline(root))
    if fp is None:
        raise WarehouseError(
            f"{root / BASELINE_FILE} has no cache key (made by an older version): run "
            "`warehouse eval W --baseline` to make it anew"
        )
    return fp


def baseline_correct_ids(root: Path) -> np.ndarray:
    path = _baseline(root)
    names = pq.read_schema(path).names
    column = next((c for c in ("correct", "baseline_correct") if c in names), None)
    if "prompt_id" not in names or column is None:
        raise FormatError(f"{path}: needs columns prompt_id and correct, has {', '.join(names)}")
    t = read_table(path, columns=["prompt_id", column])
    ids = t.column("prompt_id").to_numpy(zero_copy_only=False).astype(np.int64)
    ok = t.column(column).fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    # A prompt evaluated more than once counts as correct only if every answer was.
    wrong = np.unique(ids[~ok])
    return np.setdiff1d(ids[ok], wrong)


# ------------------------------------------------------------------------------ the run


def run_stats(
    root: Path | str,
    site: str | None = None,
    pooling: str = "mean",
    negatives: str = "all",
    split: str = "identify",
    seed: int = 0,
    per_language: bool = True,
    filter_correct: bool = False,
    threads: int = 2,
    show_progress: bool = True,
    force: bool = False,
    templates: list[str] | None = None,
) -> list[Path]:
    """Compute and store the stats of one site (every captured site when None).

    `seed` seeds the negative sampling (ratio mode) and the random order of exact ties.
    `templates` counts only prompts of those templates, in a file of its own
    (`stats_path(..., templates)`). Returns the stats file of each site. A site whose file
    was made with the same options from the same warehouse (and the same baseline answers)
    is skipped unless `force`.
    """
    root = local_folder(root, "`warehouse stats`")  # remote warehouses are read-only
    manifest = load_manifest(root)
    require_complete(manifest, root)
    negatives, _ = parse_negatives(negatives)
    templates = _check_run_options(seed, threads, templates)
    sites = check_site_pooling(manifest, site, pooling)
    specs = readable_specs(manifest)
    # The parent: the baseline whose correct answers are the counted prompts, else the
    # warehouse itself (the baseline's own key derives from the warehouse's fingerprint).
    parent = _baseline_fingerprint(root) if filter_correct else warehouse_fingerprint(manifest)
    paths = []
    for s in sites:
        opts = StatsOptions(
            site=s,
            pooling=pooling,
            negatives=negatives,
            split=split,
            seed=seed,
            per_language=per_language,
            filter_correct=filter_correct,
            templates=templates,
        )
        path = root / STATS_DIR / f"{opts.stem}.parquet"
        key = stats_key(parent, opts)
        if not force and is_current(path, key):
            paths.append(path)
            continue
        spec = specs[f"responses/{s}/{pooling}"]
        units = manifest.model.units[s]
        with WriterLock(root, "stats"):  # one writer at a time (store/lock.py)
            # Under the lock no other stats run is alive: temps here are a killed run's.
            remove_temp_entries(root / STATS_DIR)
            _compute_and_write(root, path, spec, units, opts, key, threads, show_progress)
        paths.append(path)
    return paths


def _check_run_options(seed: int, threads: int, templates: list[str] | None) -> list[str] | None:
    """Refuse a negative seed, no threads or an empty template list; the templates, sorted
    and each once (so their order and repeats do not change the cache key)."""
    if seed < 0:
        raise WarehouseError(f"--seed must be >= 0, got {seed}")
    if threads < 1:
        raise WarehouseError(f"--threads must be >= 1, got {threads}")
    if templates is not None:
        if not templates:
            raise WarehouseError("--template needs at least one template")
        templates = sorted(set(templates))
    return templates


def check_site_pooling(manifest: Manifest, site: str | None, pooling: str) -> list[str]:
    """The sites meant (every captured one when None), or an error naming the available ones."""
    cap = manifest.capture
    sites = list(cap.sites)
    if site is not None and site not in sites:
        raise WarehouseError(
            f"site {site!r} is not in this warehouse; available: {', '.join(sites)}"
        )
    if pooling not in cap.pooling:
        raise WarehouseError(
            f"pooling {pooling!r} is not in this warehouse; available: {', '.join(cap.pooling)}"
        )
    chosen = sites if site is None else [site]
    readable = readable_specs(manifest)
    missing = [s for s in chosen if f"responses/{s}/{pooling}" not in readable]
    if missing:
        raise FormatError(f"manifest lists no responses array for {missing} / {pooling}")
    return chosen


def stats_key(parent: str, opts: StatsOptions) -> CacheKey:
    """The cache key of one stats file: its options, derived from the warehouse (or, with
    filter_correct, from the baseline)."""
    return CacheKey(parent, STEP, asdict(opts))


def stats_options(meta: dict[str, Any]) -> dict[str, Any]:
    """The options a stats sidecar records (in its cache key; at the top in older ones)."""
    key = meta.get("key")
    if isinstance(key, dict) and isinstance(key.get("options"), dict):
        return key["options"]
    return meta["options"]


def _slabs(spec: ArraySpec, n_prompts: int) -> list[tuple[int, int, int]]:
    """(layer index, first neuron, end neuron) of every slab, whole chunks per slab."""
    units = spec.shape[2]
    width = (SLAB_VALUES // max(n_prompts, 1)) // NEURON_CHUNK * NEURON_CHUNK
    width = min(units, MAX_SLAB_NEURONS, max(NEURON_CHUNK, width))
    return [
        (li, a, min(a + width, units))
        for li in range(spec.shape[1])
        for a in range(0, units, width)
    ]


def _read_slabs(
    arr: zarr.Array, spec: ArraySpec, rows: np.ndarray, slabs: list[tuple[int, int, int]]
) -> Iterator[np.ndarray]:
    """Each slab as a (counted prompts, neurons) array; the next is read while one is used."""
    every_row = len(rows) == spec.shape[0]  # rows are sorted and unique, so this means 0..n-1

    def read(slab: tuple[int, int, int]) -> np.ndarray:
        li, a, b = slab
        try:
            if every_row:
                x = arr[:, li, a:b]
            else:
                x = arr.get_orthogonal_selection((rows, li, slice(a, b)))
        except WarehouseError:
            raise
        except Exception as e:  # zstd/zarr raise RuntimeError, ValueError, ... on damage
            raise FormatError(
                f"{spec.path}: layer index {li}, neurons {a}..{b - 1} could not be read "
                f"({type(e).__name__}: {e}); run `warehouse verify` on the warehouse"
            ) from e
        return from_storage(np.asarray(x), spec.dtype)

    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read, slabs[0]) if slabs else None
        for i in range(len(slabs)):
            x = pending.result()
            pending = reader.submit(read, slabs[i + 1]) if i + 1 < len(slabs) else None
            yield x


def _unique_groups(groups: list[tuple[str, np.ndarray]]) -> tuple[list[np.ndarray], list[int]]:
    """Distinct masks, and for each group the index of its mask: a warehouse of one language
    has the same prompts in "all" and in that language, and is computed once."""
    masks: list[np.ndarray] = []
    index: dict[bytes, int] = {}
    of_group = []
    for _, mask in groups:
        key = np.packbits(mask).tobytes()
        if key not in index:
            index[key] = len(masks)
            masks.append(mask)
        of_group.append(index[key])
    return masks, of_group


def _compute_and_write(
    root: Path,
    path: Path,
    spec: ArraySpec,
    units: int,
    opts: StatsOptions,
    key: CacheKey,
    threads: int,
    show_progress: bool,
) -> None:
    """Score every neuron of one site's responses, slab by slab, and write the stats file
    and then its sidecar."""
    t0 = time.perf_counter()
    d = design(
        root, opts.split, opts.per_language, opts.filter_correct, spec.shape[0], opts.templates
    )
    masks, of_group = _unique_groups(d.groups)
    n_rel, n_neurons = len(d.relations), spec.shape[1] * units
    arr = open_array(root, spec)
    slabs = _slabs(spec, len(d.rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The (group, relation, neuron) results can outgrow memory on big models (7 stats x 8 B
    # x 352k neurons x 12 relations x 7 groups = 1.6 GB for Llama-2-7B), so they live in
    # disk-backed arrays next to the output; the page cache keeps small runs in memory.
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=path.parent) as tmp:
        out = _disk_results(Path(tmp), (len(masks), n_rel, n_neurons))
        n_pos = np.zeros((len(masks), n_rel), dtype=np.int64)
        n_neg = np.zeros((len(masks), n_rel), dtype=np.int64)
        skip = np.zeros(n_neurons, dtype=bool)  # neurons with a non-finite counted response
        label = f"stats {opts.site}/{opts.pooling}/{opts.negatives}"
        with Progress(label, n_neurons, unit="neurons", enabled=show_progress) as line:
            advance = line.advance
            for (li, a, b), x in zip(slabs, _read_slabs(arr, spec, d.rows, slabs), strict=True):
                base = li * units + a  # column of this slab in the (layer index, neuron) order
                x = _without_nonfinite(x, skip[base : base + b - a])
                # One part per thread: selectivity computes blocks in parallel.
                step = -(-(b - a) // threads)
                parts = [(o, x[:, o : o + step]) for o in range(0, b - a, step)]
                for g, mask in enumerate(masks):
                    for o, res in selectivity(
                        parts, d.y, n_rel, mask, threads, ratio=opts.ratio, seed=opts.seed
                    ):
                        cols = slice(base + o, base + o + res.n_neurons)
                        for s in STAT_NAMES:
                            out[s][g, :, cols] = getattr(res, s)
                        n_pos[g], n_neg[g] = res.n_pos, res.n_neg
                advance(b - a)
        skipped = _skipped_neurons(skip, spec, units, opts)
        groups, rows = _write_parquet(path, d, spec, units, opts, out, of_group, n_pos, n_neg, skip)
    _write_stats_sidecar(path, key, opts, d, rows=rows, groups=groups, skipped=skipped, t0=t0)


def _disk_results(folder: Path, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """One float64 (group, relation, neuron) array per statistic, backed by a file in
    `folder`."""
    return {
        s: np.lib.format.open_memmap(folder / f"{s}.npy", mode="w+", dtype=np.float64, shape=shape)
        for s in STAT_NAMES
    }


def _write_stats_sidecar(
    path: Path,
    key: CacheKey,
    opts: StatsOptions,
    d: Design,
    *,
    rows: int,
    groups: list[dict[str, Any]],
    skipped: list,
    t0: float,
) -> None:
    """The stats file's sidecar: its cache key, what the file holds, and the seconds since
    `t0` it took."""
    write_sidecar(
        path,
        key,
        {
            "format": SIDECAR_FORMAT,
            "tool_version": __version__,
            "file": path.name,
            "template_set": opts.template_set,
            "rows": rows,
            "prompts": len(d.rows),
            "relations": d.relations,
            "languages": [g for g, _ in d.groups],
            "groups": groups,
            "skipped_neurons": skipped,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


def _without_nonfinite(x: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """The slab with every column that holds a NaN or an infinity set to 0 and marked in
    `skip` (a view of the run's mask): such a neuron has no ranking, so it gets none."""
    if x.dtype == np.float16:
        bad = ((x.view(np.uint16) & 0x7C00) == 0x7C00).any(axis=0)
    else:
        bad = ~np.isfinite(x).all(axis=0)
    if not bad.any():
        return x
    skip |= bad
    x = x.copy()
    x[:, bad] = 0
    return x


def _skipped_neurons(skip: np.ndarray, spec: ArraySpec, units: int, opts: StatsOptions) -> list:
    """[layer, neuron] of each skipped neuron; a warning names them."""
    cols = np.flatnonzero(skip)
    named = [[int(spec.layers[c // units]), int(c % units)] for c in cols]
    if named:
        shown = ", ".join(f"{la}:{n}" for la, n in named[:10])
        shown += ", ..." if len(named) > 10 else ""
        log.warning(
            "warning: stats %s/%s: %d neuron(s) have NaN or infinite responses and get no "
            "rank (layer:unit %s); `warehouse info` shows how many values",
            opts.site,
            opts.pooling,
            len(named),
            shown,
        )
    return named


def _write_parquet(
    path: Path,
    d: Design,
    spec: ArraySpec,
    units: int,
    opts: StatsOptions,
    out: dict[str, np.ndarray],
    of_group: list[int],
    n_pos: np.ndarray,
    n_neg: np.ndarray,
    skip: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Rank and write every (relation, language) that has positives and negatives, sorted;
    neurons in `skip` (non-finite responses) are left out."""
    # Column c of the results is (layer index c // units, neuron c % units).
    layer = np.repeat(np.asarray(spec.layers, dtype=np.int32), units)
    neuron = np.tile(np.arange(units, dtype=np.int32), spec.shape[1])
    index = {"layer": layer, "neuron": neuron, "neuron_id": layer.astype(np.int64) * units + neuron}
    keep = slice(None) if skip is None else ~skip
    index = {k: v[keep] for k, v in index.items()}
    by_name = sorted(range(len(d.groups)), key=lambda i: d.groups[i][0])
    groups, total = [], 0
    # The old sidecar goes first, so a crash cannot leave it vouching for a new file.
    sidecar_path(path).unlink(missing_ok=True)
    with _atomic_parquet(path, STATS_SCHEMA) as writer:
        for r, relation in enumerate(d.relations):
            for i in by_name:
                language, g = d.groups[i][0], of_group[i]
                counts = {"n_pos": int(n_pos[g, r]), "n_neg": int(n_neg[g, r])}
                groups.append({"relation": relation, "language": language, **counts})
                if not (counts["n_pos"] and counts["n_neg"]):
                    continue  # no positives (or negatives) here: nothing to score
                labels = {
                    "relation": relation,
                    "language": language,
                    "site": opts.site,
                    "pooling": opts.pooling,
                    "negatives": opts.negatives,
                    "split": opts.split,
                    "template_set": opts.template_set,
                }
                values = {s: np.asarray(out[s][g, r])[keep] for s in STAT_NAMES}
                ties = tie_order(opts.seed, relation, language, len(index["neuron_id"]))
                table = _ranked_table(labels, index, values, counts, ties)
                writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
                total += table.num_rows
    return groups, total


def tie_order(seed: int, relation: str, language: str, n: int) -> np.ndarray:
    """(n,) int64: a random permutation of 0..n-1, the last tie-break of the ranking.

    Seeded by (seed, first 8 bytes of sha256(relation NUL language)) so each relation and
    language gets its own order: one order shared by every relation would make relations
    share their tied neurons (an overlap made by the ranking, not by the model).
    """
    digest = hashlib.sha256(f"{relation}\0{language}".encode()).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])
    return rng.permutation(n).astype(np.int64)


def rank_order(values: dict[str, np.ndarray], ties: np.ndarray) -> np.ndarray:
    """Positions in rank order: AP descending, then AUROC, then |SMD| descending (the values
    as stored), then `ties` ascending. Never the neuron id; NaN sorts last."""

    def down(name: str) -> np.ndarray:
        v = values[name].astype(STATS_SCHEMA.field(name).type.to_pandas_dtype())
        v = np.abs(v) if name == "smd" else v
        return -v.astype(np.float64)

    return np.lexsort((ties, down("smd"), down("auroc"), down("ap")))


def _ap_groups(ap_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For APs in rank order: each row's best rank within its group of equal AP, and the
    group's size (NaNs form one group, as they sort together)."""
    n = len(ap_sorted)
    same = (ap_sorted[1:] == ap_sorted[:-1]) | (np.isnan(ap_sorted[1:]) & np.isnan(ap_sorted[:-1]))
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    sizes = np.diff(np.append(starts, n))
    return np.repeat(starts + 1, sizes).astype(np.int32), np.repeat(sizes, sizes).astype(np.int32)


def _ranked_table(
    labels: dict[str, str],
    index: dict[str, np.ndarray],
    values: dict[str, np.ndarray],
    counts: dict[str, int],
    ties: np.ndarray,
) -> pa.Table:
    """One (relation, language)'s rows in rank order (`rank_order`), so ranks are 1..N
    without gaps or repeats, with each row's AP tie group (`ap_rank`, `ap_ties`)."""
    n = len(index["neuron_id"])
    order = rank_order(values, ties)
    ap_rank, ap_ties = _ap_groups(values["ap"][order])
    columns = {
        **{k: pa.repeat(pa.scalar(v, pa.string()), n) for k, v in labels.items()},
        **{k: v[order] for k, v in index.items()},
        **{
            k: v[order].astype(STATS_SCHEMA.field(k).type.to_pandas_dtype())
            for k, v in values.items()
        },
        "rank": np.arange(1, n + 1, dtype=np.int32),
        "ap_rank": ap_rank,
        "ap_ties": ap_ties,
        **{k: np.full(n, v, dtype=np.int64) for k, v in counts.items()},
    }
    return pa.table(columns, schema=STATS_SCHEMA)


@contextlib.contextmanager
def _atomic_parquet(path: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A streaming ParquetWriter on a temp name, renamed over `path` only on success.

    store/tables.write_table builds the file in memory; stats files of big models do not
    fit there (~37 bytes a row: 1.1 GB for Llama-2-7B's ffn.act with 12 relations and 7
    language groups), so they are written row group by row group.
    """
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        # Dictionary pages only for the constant string columns: tried on the float
        # columns they fail, fall back, and cost time and size (measured 2x slower, +25 %).
        with pq.ParquetWriter(
            tmp,
            schema.with_metadata(warehouse_provenance(path)),
            compression="zstd",
            use_dictionary=list(STATS_STRINGS),
        ) as writer:
            yield writer
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
