"""`warehouse merge W1 W2 ... --out W`: one warehouse from several of the same model and capture.

Inputs are shards of one run (`ingest --shard i/n`), or warehouses of other relations,
languages or prompt samples. Their prompts are laid out as one ingest would: ordered by
(n_tokens, relation, language, template), ties by input and row, so the merged order does
not depend on the order the inputs are named in. Each input is in that order already, so an
output row block is a few contiguous row ranges of inputs ("segments"): a shard (a row of
chunks) that one segment covers at the same alignment is copied as raw bytes, any other (or
one whose codecs differ from the output's) is decoded from the inputs and encoded again by
ingest's encoder, so with the same bytes. The parts of an `ingest --shard` run are
consecutive batches of its single-process plan; merged, they equal that run byte for byte in
every table and array.

Stats, selections and evals are not merged (they are computed over the whole warehouse):
run them again on the result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import zarr

from warehouse.store.arrays import (
    SITE_ATTRIBUTES,
    ArraySpec,
    activation_spec,
    array_attributes,
    create_array,
    open_array,
    response_spec,
)
from warehouse.store.checksums import finalize_checksums, require_complete, write_coords
from warehouse.store.chunks import ChunkEncoder, put_rows
from warehouse.store.errors import FormatError, WarehouseError
from warehouse.store.files import atomic_write_bytes
from warehouse.store.format import (
    PROMPT_SCHEMA,
    PROMPTS,
    PROMPTS_FILE,
    TOKEN_SCHEMA,
    TOKENS,
    TOKENS_FILE,
)
from warehouse.store.location import Location, local_folder, require_outside
from warehouse.store.lock import creating
from warehouse.store.manifest import (
    Manifest,
    add_nonfinite,
    array_specs,
    is_warehouse,
    load_manifest,
    new_manifest,
    save_manifest,
)
from warehouse.store.progress import Progress
from warehouse.store.sections import DatasetInfo
from warehouse.store.tables import read_table_at, write_table

# Fields that must be equal in every input (model identity, the capture, the prompt split).
MODEL_FIELDS = ("weights_hash", "architecture", "n_layers", "d_model", "units")
DATASET_FIELDS = ("name", "hash", "split", "seed")
ORDER = ["n_tokens", "relation", "language", "template"]


@dataclass
class _Input:
    loc: Location
    manifest: Manifest
    prompts: pa.Table
    tokens: pa.Table | None


def merge(
    inputs: list[str | Path | Location], out: str | Path, show_progress: bool = True
) -> Manifest:
    """Merge `inputs` (local or remote, read-only) into the new local warehouse `out`;
    returns its manifest."""
    if len(inputs) < 2:
        raise WarehouseError("merge needs at least two warehouses")
    final = local_folder(out, "`warehouse merge`")
    if os.path.lexists(final) and (
        final.is_symlink() or not final.is_dir() or is_warehouse(final) or any(final.iterdir())
    ):
        raise WarehouseError(f"{final} exists and is not empty; choose a new --out")
    require_outside(final, [Location.of(x).url for x in inputs], "`warehouse merge`")
    ins = [_load(Location.of(x)) for x in inputs]
    ins = _order(ins)
    _check_compatible(ins)
    _check_disjoint(ins)
    with creating(final, "merge") as root:
        manifest = _write(root, ins, show_progress)
    return manifest


# ------------------------------------------------------------------------------ checks


def _load(loc: Location) -> _Input:
    m = load_manifest(loc)  # refuses a format other than this tool's
    require_complete(m, loc.url)  # type: ignore[arg-type]
    if "prompts" not in m.tables:
        raise FormatError(f"{loc}: has no prompts table")
    prompts = read_table_at(loc, m.tables["prompts"]["path"])
    tokens = read_table_at(loc, m.tables["tokens"]["path"]) if "tokens" in m.tables else None
    return _Input(loc, m, prompts, tokens)


def _order(ins: list[_Input]) -> list[_Input]:
    """Shards in shard order (all parts of one run, each once); other inputs as given."""
    shards = [i.manifest.shard for i in ins]
    if not any(shards):
        return ins
    if not all(shards):
        plain = ins[[bool(s) for s in shards].index(False)].loc
        raise WarehouseError(
            f"{plain} is not a shard but other inputs are: merge the parts of one sharded run "
            "first, then merge the result with other warehouses"
        )
    plans = {s["plan"] for s in shards}
    if len(plans) > 1:
        raise WarehouseError(
            "the shards come from different runs (plans differ); merge parts of one run"
        )
    count = shards[0]["count"]
    by_index: dict[int, _Input] = {}
    for x, s in zip(ins, shards, strict=True):
        if s["count"] != count:
            raise WarehouseError(f"{x.loc} is shard {s['index']}/{s['count']}, not of {count}")
        if s["index"] in by_index:
            raise WarehouseError(
                f"shard {s['index']}/{count} given twice ({by_index[s['index']].loc}, {x.loc})"
            )
        by_index[s["index"]] = x
    missing = [i for i in range(1, count + 1) if i not in by_index]
    if missing:
        raise WarehouseError(
            f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing; merge needs all "
            f"{count} parts of the run"
        )
    ordered = [by_index[i] for i in range(1, count + 1)]
    end = 0
    for x in ordered:
        s = x.manifest.shard
        if s["prompts"][0] != end:
            raise FormatError(
                f"{x.loc}: shard {s['index']} starts at prompt {s['prompts'][0]}, not {end}"
            )
        end = s["prompts"][1]
    if end != ordered[0].manifest.shard["total_prompts"]:
        raise FormatError(
            f"the shards cover {end} of {ordered[0].manifest.shard['total_prompts']} prompts"
        )
    return ordered


def _check_compatible(ins: list[_Input]) -> None:
    first = ins[0]
    for x in ins[1:]:
        for section, fields in (("model", MODEL_FIELDS), ("dataset", DATASET_FIELDS)):
            for f in fields:
                a = getattr(getattr(first.manifest, section), f)
                b = getattr(getattr(x.manifest, section), f)
                if a != b:
                    raise WarehouseError(
                        f"cannot merge: {section}.{f} differs ({first.loc}: {_short(a)}, "
                        f"{x.loc}: {_short(b)})"
                    )
        # every key, those this tool does not know too
        ca, cb = first.manifest.capture.to_json(), x.manifest.capture.to_json()
        for f in sorted(set(ca) | set(cb)):
            if ca.get(f) != cb.get(f):
                raise WarehouseError(
                    f"cannot merge: capture.{f} differs ({first.loc}: {_short(ca.get(f))}, "
                    f"{x.loc}: {_short(cb.get(f))}); site, layers, dtype and chunking must match"
                )
        if set(first.manifest.arrays) != set(x.manifest.arrays):
            raise WarehouseError(
                f"cannot merge: {first.loc} and {x.loc} hold different arrays "
                f"({sorted(set(first.manifest.arrays) ^ set(x.manifest.arrays))})"
            )
        if (first.tokens is None) != (x.tokens is None):
            raise WarehouseError(
                f"cannot merge: only one of {first.loc}, {x.loc} has a tokens table"
            )
        if first.prompts.schema != x.prompts.schema:
            raise FormatError(
                f"cannot merge: the prompts tables of {first.loc} and {x.loc} differ in schema"
            )


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_disjoint(ins: list[_Input]) -> None:
    seen: dict[int, int] = {}
    for k, x in enumerate(ins):
        ids = x.prompts.column("prompt_id").to_numpy()
        clash = [int(i) for i in ids if int(i) in seen]
        if clash:
            other = ins[seen[clash[0]]].loc
            raise WarehouseError(
                f"cannot merge: {len(clash)} prompt id(s) are in both {other} and {x.loc} "
                f"(e.g. {clash[0]}); each prompt may come from one input only"
            )
        seen.update((int(i), k) for i in ids)


# ------------------------------------------------------------------------------ layout


def _layout(ins: list[_Input]) -> tuple[np.ndarray, np.ndarray]:
    """Merged order: (input, row) of every output prompt, stable over (ORDER, input, row)."""
    import polars as pl

    frames = []
    for k, x in enumerate(ins):
        df = pl.from_arrow(x.prompts.select(ORDER))
        assert isinstance(df, pl.DataFrame)
        frames.append(df.with_columns(_k=pl.lit(k, pl.Int64), _row=pl.int_range(df.height)))
    order = pl.concat(frames).sort([*ORDER, "_k", "_row"], maintain_order=True)
    return order["_k"].to_numpy(), order["_row"].to_numpy()


def _segments(src_k: np.ndarray, src_start: np.ndarray, length: np.ndarray) -> list[tuple]:
    """Coalesce per-prompt (input, first row, rows) into (input, src start, dst start, rows)."""
    segs: list[list[int]] = []
    dst = 0
    for k, s, n in zip(src_k.tolist(), src_start.tolist(), length.tolist(), strict=True):
        if segs and segs[-1][0] == k and segs[-1][1] + segs[-1][3] == s:
            segs[-1][3] += n
        else:
            segs.append([k, s, dst, n])
        dst += n
    return [tuple(x) for x in segs]


def _write(root: Path, ins: list[_Input], show_progress: bool) -> Manifest:
    """Write the merged warehouse into `root`: tables, arrays, coordinates, then the
    manifest, marked complete."""
    ks, rows = _layout(ins)
    n_tok_by = [x.prompts.column("n_tokens").to_numpy().astype(np.int64) for x in ins]
    off_by = [x.prompts.column("token_offset").to_numpy().astype(np.int64) for x in ins]
    n_tok = np.array([n_tok_by[k][r] for k, r in zip(ks, rows, strict=True)], dtype=np.int64)
    src_off = np.array([off_by[k][r] for k, r in zip(ks, rows, strict=True)], dtype=np.int64)
    n_prompts, n_tokens = len(ks), int(n_tok.sum())
    prompt_segs = _segments(ks, rows, np.ones(len(ks), np.int64))
    token_segs = _segments(ks, src_off, n_tok)

    first = ins[0].manifest
    manifest = new_manifest(
        model=first.model,
        dataset=_dataset(ins),
        capture=first.capture,
        fingerprint="",
        counts={"prompts": n_prompts, "tokens": n_tokens},
    )
    manifest.fingerprint = manifest.computed_fingerprint()
    tables = _write_tables(root, manifest, *_tables(ins, ks, rows, n_tok, src_off))
    specs = _array_plan(first, n_prompts, n_tokens, prompt_segs, token_segs)
    _write_arrays(root, ins, specs, show_progress)

    manifest.tables = tables
    manifest.arrays = {spec.key: spec.to_json() for _, spec, _ in specs}
    write_coords(root, manifest)
    manifest.merged_from = [_provenance(x) for x in ins]
    nonfinite = add_nonfinite(*((x.manifest.nonfinite or {}) for x in ins))
    if nonfinite:  # counts of the inputs' non-finite values add up
        manifest.nonfinite = nonfinite
    finalize_checksums(root, manifest)
    manifest.state.commit(tokens=n_tokens, prompts=n_prompts)
    manifest.state.mark_complete()
    save_manifest(root, manifest)
    return manifest


def _write_tables(
    root: Path, manifest: Manifest, prompts: pa.Table, tokens: pa.Table | None
) -> dict[str, dict[str, Any]]:
    """Write the merged prompts (and tokens, where the inputs have them); their manifest
    entries."""
    write_table(root / PROMPTS_FILE, prompts, manifest)
    tables = {PROMPTS: {"path": PROMPTS_FILE, "rows": prompts.num_rows}}
    if tokens is not None:
        write_table(root / TOKENS_FILE, tokens, manifest)
        tables[TOKENS] = {"path": TOKENS_FILE, "rows": tokens.num_rows}
    return tables


def _array_plan(
    first: Manifest, n_prompts: int, n_tokens: int, prompt_segs: list, token_segs: list
) -> list[tuple[str, ArraySpec, list[tuple]]]:
    """(key, output spec, segments) of every array the inputs hold: per-token activations
    are laid out by token segments, pooled responses by prompt segments."""
    cap = first.capture
    specs = []
    for key in array_specs(first):
        site = key.split("/")[1]
        units = first.model.units[site]
        if key.startswith("activations/"):
            out = activation_spec(site, n_tokens, cap.layers, units, cap.dtype, cap.token_chunk)
            segs = token_segs
        else:
            pooling = key.split("/")[2]
            out = response_spec(
                site, pooling, n_prompts, cap.layers, units, cap.dtype, cap.prompt_chunk
            )
            segs = prompt_segs
        specs.append((key, out, segs))
    return specs


def _write_arrays(
    root: Path, ins: list[_Input], specs: list[tuple[str, ArraySpec, list[tuple]]], show: bool
) -> None:
    """Create and fill every output array, with one progress line over all their chunks."""
    first = ins[0].manifest
    blocks = sum(-(-s.shape[0] // s.chunks[0]) * s.shape[1] for _, s, _ in specs)
    with Progress("merge", blocks, unit="row blocks x layers", enabled=show) as line:
        for key, spec, segs in specs:
            site = _site_description(ins[0], key)
            create_array(root, spec, array_attributes(first.model, spec, site))
            _fill(root, ins, key, spec, segs, line.advance)


def _provenance(x: _Input) -> dict[str, Any]:
    """An input's entry in the merged manifest's `merged_from`."""
    return {
        "source": x.loc.url,
        "fingerprint": x.manifest.fingerprint,
        "prompts": x.prompts.num_rows,
        "dataset": {
            k: getattr(x.manifest.dataset, k) for k in ("relations", "languages", "max_prompts")
        },
        **(
            {"shard": f"{x.manifest.shard['index']}/{x.manifest.shard['count']}"}
            if x.manifest.shard
            else {}
        ),
    }


def _site_description(x: _Input, key: str) -> dict[str, Any]:
    """What an input's array says of its site (module, io, hook): the merged array's
    attributes are the ones its ingest wrote."""
    attrs = open_array(x.loc, array_specs(x.manifest)[key]).attrs
    return {k: attrs[k] for k in SITE_ATTRIBUTES if k in attrs}


def _dataset(ins: list[_Input]) -> DatasetInfo:
    """The inputs' common dataset section; for a sharded run exactly the run's."""
    joined: dict[str, Any] = {}
    for f in ("relations", "languages"):
        values = [getattr(x.manifest.dataset, f) for x in ins]
        joined[f] = (
            None if any(v is None for v in values) else sorted({v for vs in values for v in vs})
        )
    limits = {x.manifest.dataset.max_prompts for x in ins}
    joined["max_prompts"] = limits.pop() if len(limits) == 1 else None
    return ins[0].manifest.dataset.updated(**joined)


def _tables(
    ins: list[_Input], ks: np.ndarray, rows: np.ndarray, n_tok: np.ndarray, src_off: np.ndarray
) -> tuple[pa.Table, pa.Table | None]:
    """prompts and tokens in the merged order, their row numbers and offsets renumbered."""
    base = np.concatenate([[0], np.cumsum([x.prompts.num_rows for x in ins])])
    prompts = pa.concat_tables([x.prompts for x in ins]).take(pa.array(base[ks] + rows))
    offsets = np.concatenate([[0], np.cumsum(n_tok)[:-1]]).astype(np.int64)
    prompts = _set(prompts, "prompt_row", np.arange(len(ks), dtype=np.int64))
    prompts = _set(prompts, "token_offset", offsets)
    # Parquet reads lists back as list<element>; the ingest writes list<item>, and the name is
    # part of the stored Arrow schema, so cast back to the ingest's schema for equal bytes.
    prompts = _canonical(prompts, PROMPT_SCHEMA)
    if ins[0].tokens is None:
        return prompts.combine_chunks(), None
    tbase = np.concatenate([[0], np.cumsum([x.tokens.num_rows for x in ins])])  # type: ignore[union-attr]
    starts = tbase[ks] + src_off
    # every token of each merged prompt, in order: start + 0 .. n - 1
    take = np.repeat(starts - offsets, n_tok) + np.arange(int(n_tok.sum()))
    tokens = pa.concat_tables([x.tokens for x in ins]).take(pa.array(take))  # type: ignore[misc]
    tokens = _set(tokens, "token_row", np.arange(len(take), dtype=np.int64))
    tokens = _set(tokens, "prompt_row", np.repeat(np.arange(len(ks), dtype=np.int64), n_tok))
    return prompts.combine_chunks(), _canonical(tokens, TOKEN_SCHEMA).combine_chunks()


def _canonical(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return table.cast(schema) if table.schema.names == schema.names else table


def _set(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    i = table.schema.get_field_index(name)
    field = table.schema.field(i)
    return table.set_column(i, field, pa.array(values, type=field.type))


# ------------------------------------------------------------------------------ arrays


def _fill(
    root: Path, ins: list[_Input], key: str, spec: ArraySpec, segs: list[tuple], advance
) -> None:
    """Write every chunk of `spec` from the inputs' arrays (raw copy where aligned)."""
    srcs = [array_specs(x.manifest)[key] for x in ins]
    arrs: dict[int, zarr.Array] = {}
    out = zarr.open_array(store=str(root / spec.path), mode="r+", zarr_format=3)
    # The writer ingest uses: a merge writes the bytes a single run writes.
    encoder = ChunkEncoder.for_array(out, root / spec.path)
    if encoder is None:
        raise WarehouseError(f"{spec.path}: merge writes sharded arrays only")
    n, step = spec.shape[0], spec.chunks[0]
    starts = np.array([s[2] for s in segs], dtype=np.int64)

    def source(k: int) -> zarr.Array:
        if k not in arrs:
            arrs[k] = open_array(ins[k].loc, srcs[k])
        return arrs[k]

    def same_codecs(k: int) -> bool:
        return source(k).metadata.codecs == out.metadata.codecs

    for a in range(0, n, step):
        b = min(a + step, n)
        first = int(np.searchsorted(starts, a, side="right")) - 1
        parts = []  # (input, src start, dst start, rows) clipped to [a, b)
        j = first
        while j < len(segs) and segs[j][2] < b:
            k, s0, d0, m = segs[j]
            lo, hi = max(a, d0), min(b, d0 + m)
            parts.append((k, s0 + lo - d0, lo, hi - lo))
            j += 1
        raw = _raw_source(parts, srcs, spec, a, b)
        if raw is not None and not same_codecs(raw[0]):
            raw = None  # written with other codecs (older builds' zstd responses)
        if raw is not None:  # one input's whole shard: copied as it is
            k, chunk_row = raw
            data = ins[k].loc.read_bytes(f"{srcs[k].path}/c/{chunk_row}/0/0")
            atomic_write_bytes(root / f"{spec.path}/c/{a // step}/0/0", data)
        else:
            # One row of chunks over every layer, chunk by chunk: the memory ingest's writer
            # holds too.
            blocks = encoder.new_blocks(spec.shape[1:], out.dtype)
            for k, s, d, m in parts:
                put_rows(blocks, d - a, source(k)[s : s + m])
            encoder.write_blocks(a // step, blocks, b - a)
        advance(spec.shape[1])


def _raw_source(parts: list[tuple], srcs: list[ArraySpec], spec: ArraySpec, a: int, b: int):
    """(input, chunk row) when output rows [a, b) are exactly one stored chunk of one input."""
    if len(parts) != 1:
        return None
    k, s, _, m = parts[0]
    src = srcs[k]
    step = spec.chunks[0]
    if src.chunks != spec.chunks or src.shards != spec.shards or s % step:
        return None
    # a whole chunk, or the last (partial) chunk of both arrays, padded alike
    whole = m == step and s + m <= src.shape[0]
    last = b == spec.shape[0] and s + m == src.shape[0]
    return (k, s // step) if whole or last else None
