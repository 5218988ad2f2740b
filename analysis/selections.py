"""`warehouse select`: named neuron sets, each stored with the query that made it.

A selection is `selections/<name>.parquet` (one row per neuron: selection, neuron_id, site,
layer, neuron, rank, score) plus `selections/<name>.json`, which says what it is: the SQL
over the stats that chose it, the stats options it was chosen from, and the model (weights
hash, layers, units per layer) its neuron ids refer to, so an ablation can refuse a
selection made for another model or site.

Targets come from the stats of one (site, pooling, negatives[, templates]): the top K by
rank (AP, its ties broken as analysis/stats.py says) of a relation and language, the top
fraction of all the site's neurons, or any DuckDB query over the view `stats`. A top-K
sidecar says how many neurons share the K-th AP and how many of them made the cut.
Controls (`random_like`) have the same size and the same count per layer as a target, are
disjoint from it, and are seeded.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from warehouse.analysis.stats import (
    check_site_pooling,
    parse_negatives,
    stats_options,
    stats_path,
    template_set,
)
from warehouse.store.derived import checksum_field
from warehouse.store.errors import FormatError, WarehouseError
from warehouse.store.files import atomic_write_json, read_json, sha256_file
from warehouse.store.fingerprint import sidecar_path
from warehouse.store.format import (
    RESERVED_SELECTIONS,
    SELECTION_SCHEMA,
    SELECTIONS_DIR,
    STATS_DIR,
)
from warehouse.store.location import require_regular
from warehouse.store.lock import WriterLock
from warehouse.store.manifest import Manifest, load_manifest
from warehouse.store.tables import read_table, write_table
from warehouse.store.version import __version__

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Selection:
    """A stored selection: W/selections/<name>.parquet and its sidecar <name>.json, checked
    (read_selection). Neuron ids are per site: layer * units + neuron."""

    name: str
    meta: dict[str, Any]  # the sidecar: site, units, n_layers, weights_hash, size, sql, ...
    frame: pl.DataFrame  # one row per neuron (SELECTION_SCHEMA), best first: by rank
    sha256: str  # of the Parquet file: a changed selection is evaluated anew

    @property
    def site(self) -> str:
        return str(self.meta["site"])

    @property
    def units(self) -> int:
        """Units per layer of the site the ids were counted with."""
        return int(self.meta["units"])

    @property
    def n_layers(self) -> int:
        return int(self.meta["n_layers"])

    @property
    def weights_hash(self) -> str:
        return str(self.meta["weights_hash"])

    @property
    def neuron_ids(self) -> np.ndarray:
        """(n,) int64, best first."""
        return self.frame["neuron_id"].to_numpy().astype(np.int64)


# ------------------------------------------------------------------------------ reading


def selection_paths(root: Path, name: str) -> tuple[Path, Path]:
    base = Path(root) / SELECTIONS_DIR
    return base / f"{name}.parquet", base / f"{name}.json"


# What a sidecar must say, and the columns a selection file must have.
SIDECAR_KEYS = ("site", "weights_hash", "units", "n_layers", "size")
COLUMNS = ("neuron_id", "site", "layer", "neuron", "rank")


def read_selection(root: Path | str, name: str) -> Selection:
    """Read and check W/selections/<name>.parquet and <name>.json: a name of that folder
    (not the reserved `baseline`), a sidecar with SIDECAR_KEYS, as many rows as it says,
    one site, neuron ids that are layer * units + neuron, each once."""
    root = Path(root)
    if not isinstance(name, str) or not name or name != Path(name).name or name.startswith("."):
        raise WarehouseError(f"{name!r} is not a selection name")
    if name in RESERVED_SELECTIONS:
        raise WarehouseError(f"{name!r} is reserved for the baseline rows; rename the selection")
    parquet, side = selection_paths(root, name)
    if not side.is_file() or not parquet.is_file():
        names = (
            sorted(p.stem for p in parquet.parent.glob("*.json")) if side.parent.is_dir() else []
        )
        raise WarehouseError(
            f"no selection named {name!r} in {root}; "
            + (f"available: {', '.join(names)}" if names else "make one with `warehouse select`")
        )
    meta = read_json(side)
    if not isinstance(meta, dict) or any(k not in meta for k in SIDECAR_KEYS):
        raise FormatError(f"{side}: needs keys {', '.join(SIDECAR_KEYS)}")
    table = read_table(parquet)
    missing = set(COLUMNS) - set(table.column_names)
    if missing:
        raise FormatError(f"{parquet}: missing column(s) {', '.join(sorted(missing))}")
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if len(frame) != meta["size"]:
        raise FormatError(f"{parquet}: {len(frame)} rows, its sidecar says {meta['size']}")
    sel = Selection(name, meta, frame.sort(["rank", "neuron_id"]), sha256_file(parquet))
    _check_rows(sel, parquet)
    return sel


def _check_rows(sel: Selection, parquet: Path) -> None:
    others = sorted(set(sel.frame["site"].unique().to_list()) - {sel.site})
    if others:
        raise WarehouseError(
            f"selection {sel.name!r} is of site {sel.site} but holds neurons of "
            f"{', '.join(others)}; a selection names exactly one site"
        )
    ids = sel.neuron_ids
    layer, neuron = (sel.frame[c].to_numpy().astype(np.int64) for c in ("layer", "neuron"))
    if not np.array_equal(ids, layer * sel.units + neuron):
        raise FormatError(f"{parquet}: neuron_id is not layer * {sel.units} + neuron")
    if len(np.unique(ids)) != len(ids):
        raise FormatError(f"{parquet}: a neuron appears twice")


def list_selections(root: Path | str) -> list[dict[str, Any]]:
    """Every selection's sidecar (name, kind, relation, language, site, size, sql, ...)."""
    base = Path(root) / SELECTIONS_DIR
    if not base.is_dir():
        return []
    return [read_json(p) for p in sorted(base.glob("*.json"))]


# ------------------------------------------------------------------------------ targets


def select(
    root: Path | str,
    name: str,
    relation: str | None = None,
    language: str = "all",
    site: str | None = None,
    pooling: str = "mean",
    negatives: str = "all",
    *,
    top: int | None = None,
    fraction: float | None = None,
    sql: str | None = None,
    overwrite: bool = False,
    templates: list[str] | None = None,
) -> Path:
    """Store the neurons chosen by exactly one of `top` (K best ranks of `relation` in
    `language`), `fraction` (that many of all the site's neurons) or `sql` (a DuckDB query
    over the view `stats` returning neuron_id and optionally score), from the stats file of
    (site, pooling, negatives) or, with `templates`, of that template set. Returns the
    Parquet path.
    """
    root = Path(root)
    manifest = load_manifest(root)
    _check_name(root, name, overwrite)
    if sum(x is not None for x in (top, fraction, sql)) != 1:
        raise WarehouseError("choose exactly one of --top, --fraction and --sql")
    negatives, _ = parse_negatives(negatives)
    site, path, stats_meta = _find_stats(root, manifest, site, pooling, negatives, templates)
    units = manifest.model.units[site]
    layers = list(manifest.capture.layers)
    if relation is None and sql is None:
        raise WarehouseError("--top and --fraction need --relation")
    if relation is not None:  # also with --sql: a named relation must be in the stats
        _check_relation_language(stats_meta, relation, language)
    ties = None
    if top is not None or fraction is not None:
        k = _top_k(top, fraction, units * len(layers))
        where = _group_where(site, pooling, negatives, templates, relation, language)
        sql, ties = _top_k_query(path, where, k)
    assert sql is not None
    ids, score = _run_query(path, sql, site)
    frame = _frame(name, site, units, layers, ids, score)
    meta = {
        "name": name,
        "kind": "target",
        "of": None,
        "seed": None,
        "relation": relation,
        "language": language,
        "site": site,
        "pooling": pooling,
        "negatives": negatives,
        "split": stats_options(stats_meta)["split"],
        "sql": sql,
        "ties": ties,
        "stats": _stats_source(path, stats_meta),
        **_model_meta(manifest, site),
        **_size_meta(frame, layers),
    }
    return _write(root, name, frame, meta, overwrite)


def _find_stats(
    root: Path,
    manifest: Manifest,
    site: str | None,
    pooling: str,
    negatives: str,
    templates: list[str] | None,
) -> tuple[str, Path, dict[str, Any]]:
    """The site (the only one, or the only one with stats, when not named), the stats file
    a selection is taken from and its sidecar; both files must exist."""
    check_site_pooling(manifest, site, pooling)
    site = _resolve_site(root, manifest, site, pooling, negatives)
    path = stats_path(root, site, pooling, negatives, templates)
    if not path.is_file() or not sidecar_path(path).is_file():
        what = "" if templates is None else f", {len(set(templates))} templates"
        raise WarehouseError(
            f"no stats for site {site}, pooling {pooling}, negatives {negatives}{what} in "
            f"{root}: run `warehouse stats {root} --site {site} --pooling {pooling} "
            f"--negatives {negatives}{' --template ...' if templates else ''}` first"
        )
    return site, path, read_json(sidecar_path(path))


def _group_where(
    site: str,
    pooling: str,
    negatives: str,
    templates: list[str] | None,
    relation: str,
    language: str,
) -> str:
    """The SQL condition of one group of stats rows: the neurons a top-k cut ranks. It is
    stored in the selection's sidecar as part of its `sql`, so its layout stays as it is."""
    return (
        f"site = {sql_literal(site)} AND pooling = {sql_literal(pooling)} AND negatives = "
        f"{sql_literal(negatives)}\n  AND template_set = "
        f"{sql_literal(template_set(templates))} "
        f"AND relation = {sql_literal(relation)} AND language = {sql_literal(language)}"
    )


def _stats_source(path: Path, stats_meta: dict[str, Any]) -> dict[str, Any]:
    """What a selection records of the stats it was taken from: file, fingerprint, options."""
    return {
        "file": f"{STATS_DIR}/{path.name}",
        "fingerprint": stats_meta.get("fingerprint"),
        **stats_options(stats_meta),
    }


def _top_k_query(stats_file: Path, where: str, k: int) -> tuple[str, dict[str, Any]]:
    """The SQL of the k best ranks of one group (the text the sidecar records) and how the
    cut at k falls (`_ties_at`)."""
    sql = f"SELECT neuron_id, ap AS score FROM stats\nWHERE {where} AND rank <= {k}\n"
    sql += "ORDER BY rank"
    return sql, _ties_at(stats_file, where, k)


def _check_name(root: Path, name: str, overwrite: bool) -> None:
    # A leading dot would hide the file; ".tmp-" would read as a leftover temp file.
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".tmp-" in name:
        raise WarehouseError(
            f"bad selection name {name!r}: use letters, digits, '_', '.' and '-', "
            "not starting with '.'"
        )
    if name in RESERVED_SELECTIONS:
        raise WarehouseError(f"{name!r} names the unablated rows of evals; choose another name")
    if selection_paths(root, name)[1].exists() and not overwrite:
        raise WarehouseError(
            f"a selection named {name!r} already exists in {root}; choose another name "
            "or pass --overwrite"
        )


def _resolve_site(
    root: Path, manifest: Manifest, site: str | None, pooling: str, negatives: str
) -> str:
    sites = list(manifest.capture.sites)
    if site is not None:
        return site
    if len(sites) == 1:
        return sites[0]
    with_stats = [s for s in sites if stats_path(root, s, pooling, negatives).is_file()]
    if len(with_stats) == 1:
        return with_stats[0]
    if not with_stats:
        raise WarehouseError(
            f"no stats for pooling {pooling}, negatives {negatives} in {root}: run "
            f"`warehouse stats {root} --pooling {pooling} --negatives {negatives}` first"
        )
    raise WarehouseError(
        f"this warehouse has several sites ({', '.join(sites)}); choose one with --site"
    )


def _check_relation_language(stats_meta: dict, relation: str, language: str) -> None:
    relations = stats_meta.get("relations", [])
    if relation not in relations:
        raise WarehouseError(
            f"unknown relation {relation!r} in these stats; available: {', '.join(relations)}"
        )
    scored = [
        g["language"]
        for g in stats_meta.get("groups", [])
        if g["relation"] == relation and g["n_pos"] and g["n_neg"]
    ]
    if language not in scored:
        raise WarehouseError(
            f"no stats for relation {relation!r} in language {language!r}; "
            f"available: {', '.join(scored) or '(none)'}"
        )


def _top_k(top: int | None, fraction: float | None, total: int) -> int:
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
            raise WarehouseError(f"--top must be a positive integer, got {top!r}")
        if top > total:
            raise WarehouseError(f"--top {top} exceeds the site's {total:,} neurons")
        return int(top)
    assert fraction is not None
    if not 0 < fraction <= 1:
        raise WarehouseError(f"--fraction must be in (0, 1], got {fraction}")
    k = int(np.floor(fraction * total + 0.5))  # round half up, as the docs say
    if k < 1:
        raise WarehouseError(
            f"--fraction {fraction} of {total:,} neurons selects none; use at least {1 / total:.2g}"
        )
    return k


def sql_literal(value: str) -> str:
    """`value` as a SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _query(stats_file: Path, sql: str) -> pa.Table:
    """The result of one SELECT over the view `stats` (that one file), in the same sandbox as
    `warehouse query --engine duckdb`: DuckDB's own parser admits exactly one SELECT, the
    connection opens no file (the stats file is handed to it as an Arrow dataset, checked to
    be a plain file first), and the default memory limit and timeout hold."""
    import pyarrow.dataset as ds

    from warehouse.queries.limits import QueryLimits
    from warehouse.queries.sandbox import duckdb_select
    from warehouse.store.derived import check_derived_path

    require_regular(stats_file)
    check_derived_path(stats_file)  # its sidecar and crc32c, as every read of a derived table
    return duckdb_select(
        sql,
        QueryLimits(),
        lambda con, _stop: con.register("stats", ds.dataset([str(stats_file)], format="parquet")),
        lambda rel: rel.to_arrow_table(),
        lambda e: f"the selection query failed: {e}",
    )


def _ties_at(stats_file: Path, where: str, k: int) -> dict[str, Any]:
    """How the top-k cut falls: the k-th AP, how many neurons share it (`ap_ties`), how
    many of those are in the top k (`selected`), and what separates rank k from rank k + 1
    (`cut_by`: "ap", "auroc", "smd", "seed" when only the seeded order does, or null when
    k is every neuron)."""
    cols = "rank, ap, auroc, abs(smd) AS abs_smd, ap_rank, ap_ties"
    rows = _query(stats_file, f"SELECT {cols} FROM stats WHERE {where} AND rank IN ({k}, {k + 1})")
    by_rank = {r["rank"]: r for r in rows.to_pylist()}
    at, after = by_rank[k], by_rank.get(k + 1)
    cut_by = None
    if after is not None:
        differs = [c for c in ("ap", "auroc", "abs_smd") if at[c] != after[c]]
        cut_by = {"ap": "ap", "auroc": "auroc", "abs_smd": "smd"}[differs[0]] if differs else "seed"
    return {
        "k": k,
        "ap": at["ap"],
        "ap_ties": at["ap_ties"],
        "selected": k - at["ap_rank"] + 1,
        "cut_by": cut_by,
    }


def _run_query(stats_file: Path, sql: str, site: str) -> tuple[np.ndarray, np.ndarray]:
    """neuron_id (int64) and score (float64, NaN where the query gives none) of each row."""
    result = _query(stats_file, sql)
    cols = result.column_names
    if "neuron_id" not in cols:
        raise WarehouseError(
            f"the selection query must return a neuron_id column; it returned {', '.join(cols)}"
        )
    if "site" in cols:
        other = sorted({s for s in result.column("site").to_pylist() if s != site}, key=str)
        if other:
            raise WarehouseError(f"the query returned neurons of site(s) {other}, not of {site!r}")
    id_col = result.column("neuron_id")
    if not (pa.types.is_integer(id_col.type) or pa.types.is_null(id_col.type)):
        raise WarehouseError(f"neuron_id must be an integer column, got {id_col.type}")
    if id_col.null_count:
        raise WarehouseError(f"the query returned {id_col.null_count} null neuron_id(s)")
    ids = id_col.to_numpy().astype(np.int64)
    if "score" in cols:
        try:
            score = result.column("score").cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise WarehouseError(f"score must be numeric ({e})") from None
    else:
        score = np.full(len(ids), np.nan)
    if not len(ids):
        raise WarehouseError("the selection query returned no neurons")
    return ids, score


def _frame(
    name: str, site: str, units: int, layers: list[int], ids: np.ndarray, score: np.ndarray
) -> pl.DataFrame:
    """Validated rows, ranked: by score descending when the query gave scores, equal scores
    (and every row without one) in the query's row order, never by neuron_id."""
    bad = ids[(ids < 0) | ~np.isin(ids // units, layers)]
    if len(bad):
        shown = ", ".join(map(str, bad[:10].tolist())) + (" …" if len(bad) > 10 else "")
        raise WarehouseError(
            f"{len(bad)} neuron id(s) are not neurons of site {site} in this warehouse "
            f"(layers {layers[0]}..{layers[-1]} x {units} units): {shown}"
        )
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][:10].tolist()
        raise WarehouseError(f"the query returned neuron ids more than once: {dup}")
    if np.isnan(score).all():
        order = np.arange(len(ids))
    else:
        order = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")
    ids, score = ids[order], score[order]
    table = pa.table(
        {
            "selection": pa.repeat(pa.scalar(name, pa.string()), len(ids)),
            "neuron_id": ids,
            "site": pa.repeat(pa.scalar(site, pa.string()), len(ids)),
            "layer": (ids // units).astype(np.int32),
            "neuron": (ids % units).astype(np.int32),
            "rank": np.arange(1, len(ids) + 1, dtype=np.int32),
            # NaN (no score) is stored as null, which SQL and Polars treat as missing
            "score": pa.array(score, pa.float64(), from_pandas=True),
        },
        schema=SELECTION_SCHEMA,
    )
    return pl.from_arrow(table)


def _model_meta(manifest: Manifest, site: str) -> dict[str, Any]:
    return {
        "model": manifest.model.name,
        "weights_hash": manifest.model.weights_hash,
        "units": manifest.model.units[site],
        "n_layers": manifest.model.n_layers,
        "layers": list(manifest.capture.layers),
        "warehouse_fingerprint": manifest.fingerprint,
    }


def _size_meta(frame: pl.DataFrame, layers: list[int]) -> dict[str, Any]:
    counts = frame.group_by("layer").len()
    by_layer = dict(zip(counts["layer"].to_list(), counts["len"].to_list(), strict=True))
    return {"size": len(frame), "per_layer": {str(n): by_layer.get(n, 0) for n in layers}}


def _write(
    root: Path, name: str, frame: pl.DataFrame, meta: dict[str, Any], overwrite: bool = True
) -> Path:
    parquet, side = selection_paths(root, name)
    meta = {
        **meta,
        "file": f"{SELECTIONS_DIR}/{parquet.name}",
        "tool_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # The sidecar marks a selection as present, so it goes last (and first on overwrite).
    with WriterLock(root, "select"):
        if side.exists() and not overwrite:  # made by another process since the check
            raise WarehouseError(
                f"a selection named {name!r} already exists in {root}; choose another name "
                "or pass --overwrite"
            )
        side.unlink(missing_ok=True)
        write_table(parquet, frame.to_arrow().cast(SELECTION_SCHEMA))  # polars writes large_string
        atomic_write_json(side, {**meta, **checksum_field(parquet)})
    return parquet


# ----------------------------------------------------------------------------- controls


def random_like(root: Path | str, name: str, like: str, seed: int, overwrite: bool = False) -> Path:
    """A random control for selection `like`: as many neurons in every layer, none of them
    in `like`, drawn with numpy's default_rng(seed) layer by layer in ascending order."""
    root = Path(root)
    manifest = load_manifest(root)
    _check_name(root, name, overwrite)
    if name == like:
        raise WarehouseError("a control cannot replace the selection it copies")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise WarehouseError(f"--seed must be a non-negative integer, got {seed!r}")
    target = read_selection(root, like)
    site, units = target.site, target.meta["units"]
    if target.meta.get("weights_hash") != manifest.model.weights_hash:
        raise WarehouseError(f"selection {like!r} was made for other model weights")
    rng = np.random.default_rng(seed)
    chosen = []
    for layer, count in sorted((int(k), v) for k, v in target.meta["per_layer"].items()):
        if not count:
            continue
        taken = target.frame.filter(pl.col("layer") == layer)["neuron"].to_numpy()
        free = np.setdiff1d(np.arange(units), taken)
        if count > len(free):
            raise WarehouseError(
                f"layer {layer} holds {count} of {units} neurons of {like!r}: too few are left "
                "for a disjoint control of the same size"
            )
        chosen.append(layer * units + np.sort(rng.choice(free, count, replace=False)))
    ids = np.concatenate(chosen)
    layers = target.meta["layers"]
    frame = _frame(name, site, units, layers, ids, np.full(len(ids), np.nan))
    meta = {
        **{k: target.meta.get(k) for k in ("relation", "language", "pooling", "negatives")},
        **{k: target.meta.get(k) for k in ("split", "stats")},
        "name": name,
        "kind": "control",
        "of": like,
        "seed": int(seed),
        "site": site,
        "sql": None,
        **_model_meta(manifest, site),
        **_size_meta(frame, layers),
    }
    return _write(root, name, frame, meta, overwrite)
