"""`warehouse ingest`: dataset -> model forward passes -> warehouse (tables, arrays, manifest).

The run is a sequence of fixed batches over a fixed prompt order. The manifest records how
many rows of each kind are safely on disk; a re-run of the same command resumes at the first
batch not wholly on disk and ends with the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from warehouse.ingest.capture import POOLINGS, Capturer, CaptureSpec
from warehouse.ingest.datasets import build_prompts, load_dataset
from warehouse.ingest.models import LoadedModel, load_model
from warehouse.ingest.prefix import PACKED
from warehouse.ingest.shards import check_shard, shard_range
from warehouse.ingest.sites import resolve_layers, resolve_sites, site_description, units
from warehouse.ingest.tokens import (
    Encoded,
    encode_prompts,
    token_ids_by_prompt,
    tokenize_prompts,
)
from warehouse.store.arrays import (
    PROMPT_CHUNK,
    TOKEN_CHUNK,
    ArraySpec,
    activation_spec,
    array_attributes,
    create_array,
    response_spec,
)
from warehouse.store.checksums import finalize_checksums, write_coords
from warehouse.store.collector import skips_older_objects
from warehouse.store.errors import WarehouseError
from warehouse.store.files import remove_temp_entries, sha256_file
from warehouse.store.fingerprint import fingerprint, fingerprint_of
from warehouse.store.format import DERIVED_POOLING_RULES
from warehouse.store.lock import WriterLock, remove_dead_creations
from warehouse.store.manifest import (
    Manifest,
    add_nonfinite,
    array_specs,
    describe_nonfinite,
    is_warehouse,
    load_manifest,
    new_manifest,
    save_manifest,
)
from warehouse.store.progress import Progress
from warehouse.store.sections import Capture, ModelInfo, State
from warehouse.store.tables import numpy_columns, read_table, write_table
from warehouse.store.writer import ChunkBuffer, Writer

STORAGE_DTYPES = ("float16", "bfloat16", "float32")
log = logging.getLogger(__name__)


@dataclass
class IngestConfig:
    out: Path
    model: str = "smollm2-135m"
    dataset: str | None = None  # None: the built-in dataset
    relations: list[str] | None = None
    languages: list[str] | None = None
    split: str = "all"
    sites: str = "ffn.act"
    layers: str | None = None  # None: all layers
    capture: str = "tokens"  # tokens | pooled
    pooling: list[str] = field(default_factory=lambda: list(POOLINGS))
    dtype: str = "float16"
    batch_size: int = 32
    device: str = "cpu"
    model_dtype: str = "float32"
    max_prompts: int | None = None
    seed: int = 0
    token_chunk: int = TOKEN_CHUNK  # rows per chunk of per-token arrays
    prompt_chunk: int = PROMPT_CHUNK  # rows per chunk of response arrays
    shard: tuple[int, int] | None = None  # (i, n): only shard i of n (1-based), a part to merge
    # A per-token ingest stores `max` and `last` only as the per-token rows they are derived
    # from (store/derived_pooling.py); False stores them too, as builds before did.
    derive_pooling: bool = True
    # What a stored NaN or infinity does: "warn" (stored, counted in the manifest, warned
    # about) or "error" (the run stops before that batch). Not part of the plan: a run
    # stopped by "error" resumes with "warn".
    on_nonfinite: str = "warn"
    # Run each distinct token prefix of a batch once (ingest/prefix.py): values equal one plain
    # forward pass per batch within float rounding. None: as the warehouse was planned (a
    # new one shares); True or False must match what an existing warehouse was planned with.
    shared_prefix: bool | None = None
    # Where the writer encodes and writes (store/writer.py): None, on a thread of its own beside
    # an accelerator's forward and in line between batches beside a CPU's (which uses every
    # core); True or False, on a thread or in line whatever the device (bench/ingest.py
    # compares them). The files are the same either way.
    writer_thread: bool | None = None


ON_NONFINITE = ("warn", "error")


def _check_options(cfg: IngestConfig) -> None:
    if cfg.capture not in ("tokens", "pooled"):
        raise WarehouseError(f"--capture must be 'tokens' or 'pooled', not {cfg.capture!r}")
    bad = [p for p in cfg.pooling if p not in POOLINGS]
    if bad or not cfg.pooling:
        raise WarehouseError(
            f"unknown pooling {bad or '(none)'}; choose from {', '.join(POOLINGS)}"
        )
    if cfg.dtype not in STORAGE_DTYPES:
        raise WarehouseError(
            f"--dtype must be one of {', '.join(STORAGE_DTYPES)}, not {cfg.dtype!r}"
        )
    if cfg.token_chunk < 1 or cfg.prompt_chunk < 1:
        raise WarehouseError("chunk sizes must be at least 1")
    if cfg.batch_size < 1:
        raise WarehouseError("--batch-size must be at least 1")
    if cfg.max_prompts is not None and cfg.max_prompts < 1:
        raise WarehouseError("--max-prompts must be at least 1")
    if cfg.shard is not None:
        check_shard(cfg.shard)
    if cfg.on_nonfinite not in ON_NONFINITE:
        raise WarehouseError(f"--on-nonfinite must be 'warn' or 'error', not {cfg.on_nonfinite!r}")


def select_prompts(cfg: IngestConfig, dataset):
    """The prompts an ingest of `cfg` captures, in the dataset's order."""
    prompts = build_prompts(
        dataset, relations=cfg.relations, languages=cfg.languages, split=cfg.split, seed=cfg.seed
    )
    if not prompts:
        raise WarehouseError("no prompts match the chosen relations, languages and split")
    if cfg.max_prompts is not None and cfg.max_prompts < len(prompts):
        # prompt_id is a hash, so its order is a fixed pseudo-random sample over every
        # relation and language; the sample keeps the dataset's order.
        keep = set(sorted(p.prompt_id for p in prompts)[: cfg.max_prompts])
        prompts = [p for p in prompts if p.prompt_id in keep]
    return prompts


def _plan(cfg: IngestConfig, loaded: LoadedModel, dataset, n_prompts: int) -> dict:
    """Everything that determines the warehouse's bytes; equal plans give equal warehouses."""
    config = loaded.model.config
    sites = resolve_sites(config, cfg.sites)
    layers = resolve_layers(config, cfg.layers)
    return {
        "model": {
            "name": loaded.name,
            "source": loaded.source,
            "weights_hash": loaded.weights_hash,
            "architecture": loaded.architecture,
            "n_layers": loaded.n_layers,
            "d_model": loaded.d_model,
            "units": {s: units(config, s) for s in sites},
        },
        "dataset": {
            "name": dataset.name,
            "hash": dataset.hash,
            "relations": sorted(cfg.relations) if cfg.relations else None,
            "languages": sorted(cfg.languages) if cfg.languages else None,
            "split": cfg.split,
            "seed": cfg.seed,
            "max_prompts": cfg.max_prompts,
        },
        "capture": {
            "sites": sites,
            "layers": layers,
            "mode": cfg.capture,
            "pooling": list(cfg.pooling),
            **_derived_pooling(cfg),
            "dtype": cfg.dtype,
            "batch_size": cfg.batch_size,
            "batching": "equal-length",
            # No key: one plain forward per batch (the plan of every older warehouse).
            **({} if cfg.shared_prefix is False else {"prefix": PACKED}),
            "model_dtype": cfg.model_dtype,
            "token_chunk": cfg.token_chunk,
            "prompt_chunk": cfg.prompt_chunk,
        },
    }


def _derived_pooling(cfg: IngestConfig) -> dict[str, dict[str, str]]:
    """The plan's `derived_pooling` (absent when every pooling is stored): the poolings a
    per-token ingest derives from its per-token rows instead of storing them."""
    if cfg.capture != "tokens" or not cfg.derive_pooling:
        return {}
    derived = {p: DERIVED_POOLING_RULES[p] for p in cfg.pooling if p in DERIVED_POOLING_RULES}
    return {"derived_pooling": derived} if derived else {}


def _legacy_plan(plan: dict) -> dict:
    """The plan as builds before derived poolings made it (every pooling stored): a
    warehouse they began resumes with the arrays it has."""
    capture = {k: v for k, v in plan["capture"].items() if k != "derived_pooling"}
    return {**plan, "capture": capture}


def _as_planned(plan: dict, manifest: Manifest, shared_prefix: bool | None) -> dict:
    """`plan` with an existing warehouse's prefix method where the options leave it open
    (`shared_prefix` None): a warehouse keeps computing the way it was planned, so one
    written before the method existed resumes, and shards, with one plain forward a batch."""
    if shared_prefix is not None:
        return plan
    capture = {k: v for k, v in plan["capture"].items() if k != "prefix"}
    if manifest.capture.prefix is not None:
        capture["prefix"] = manifest.capture.prefix
    return {**plan, "capture": capture}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b and k != "source":
            out.append(f"{prefix}{k} ({a!r} -> {b!r})")
    return out


def _attributes(model: ModelInfo, spec: ArraySpec) -> dict[str, Any]:
    """A new array's attributes, with its site described from the model's site table."""
    site = spec.key.split("/")[1]
    return array_attributes(model, spec, site_description(model.architecture, site))


def _array_plan(model: ModelInfo, cap: Capture, n_prompts: int, n_tokens: int) -> list[ArraySpec]:
    specs = []
    for site in cap.sites:
        u = model.units[site]
        if cap.per_token:
            specs.append(activation_spec(site, n_tokens, cap.layers, u, cap.dtype, cap.token_chunk))
        for pool in cap.stored_pooling:
            specs.append(
                response_spec(site, pool, n_prompts, cap.layers, u, cap.dtype, cap.prompt_chunk)
            )
    return specs


def order_by_length(tokenizer, prompts: list) -> tuple[list, Encoded]:
    """(prompts, their encoding) ordered by token count, the order of an ingest's rows:
    batches then never mix lengths, so no batch is padded, and a prompt's stored values
    cannot depend on padding or its neighbours' lengths (padded batches differ from
    unpadded ones in the last float16 bit). Tokenized once: the same encoding orders them
    and fills the tokens table."""
    encoded = encode_prompts(tokenizer, prompts)
    lengths = [len(x) for x in encoded.ids]
    # Within a length, prompts of one template sit together: their shared prefix tokens have
    # identical activations (causal attention), which zstd finds inside a chunk.
    order = sorted(
        range(len(prompts)),
        key=lambda i: (lengths[i], prompts[i].relation, prompts[i].language, prompts[i].template),
    )
    return [prompts[i] for i in order], encoded.take(order)


def batch_ranges(n_tokens: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) prompt rows of each batch of an ingest: at most batch_size prompts of
    one length, in row order. `n_tokens` is each prompt's token count in the order of
    `order_by_length`; an ingest, a resume and each `--shard` all cut the run this way."""
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(n_tokens) + 1):
        if i == len(n_tokens) or i - start == batch_size or n_tokens[i] != n_tokens[start]:
            out.append((start, i))
            start = i
    return out


def _create(
    final: Path, plan: dict, loaded: LoadedModel, prompts, shard: tuple[int, int] | None = None
) -> Manifest:
    """Lay out a new warehouse in a temp sibling folder and rename it into place, so a crash
    while creating it leaves no half-made folder behind."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_creations(final)
    root = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        # The lock marks the temp folder as ours while we live (one whose creator was killed
        # is removed by the next ingest into `final`); released before the rename, so it is
        # not carried into the warehouse.
        with WriterLock(root, "ingest (creating)"):
            manifest = _lay_out(root, plan, loaded, prompts, shard)
        try:
            if final.exists():
                final.rmdir()  # only ever an empty folder here (ingest checked)
            os.rename(root, final)
        except OSError:
            # Another ingest put its warehouse there first: ours is dropped, and the
            # caller meets that one under the writer lock (resume or refusal).
            if not is_warehouse(final):
                raise
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return manifest


def _lay_out(
    root: Path, plan: dict, loaded: LoadedModel, prompts, shard: tuple[int, int] | None = None
) -> Manifest:
    root.chmod(0o755)  # mkdtemp makes it private; a warehouse is meant to be shared
    prompts, encoded = order_by_length(loaded.tokenizer, prompts)
    if shard is not None:
        # A shard is a run of whole batches of the single-process plan: the same batches give
        # the same values, so merging every part reproduces the single run byte for byte.
        n_tok = np.array([len(x) for x in encoded.ids], dtype=np.int64)
        starts = [s for s, _ in batch_ranges(n_tok, plan["capture"]["batch_size"])]
        start, end = shard_range(n_tok, starts, shard)
        shard_info = {
            "index": shard[0],
            "count": shard[1],
            "plan": fingerprint(plan),
            "prompts": [start, end],
            "tokens": [int(n_tok[:start].sum()), int(n_tok[:end].sum())],
            "total_prompts": len(prompts),
            "total_tokens": int(n_tok.sum()),
        }
        prompts, encoded = prompts[start:end], encoded.take(range(start, end))
    prompt_table, token_table = tokenize_prompts(loaded.tokenizer, prompts, encoded)
    manifest = new_manifest(
        model=plan["model"],
        dataset=plan["dataset"],
        capture=plan["capture"],
        fingerprint="",  # set below, once the shard (if any) is known
        counts={"prompts": prompt_table.num_rows, "tokens": token_table.num_rows},
    )
    if shard is not None:
        manifest.shard = shard_info
    manifest.fingerprint = manifest.computed_fingerprint()
    tables = (("prompts", prompt_table), ("tokens", token_table))
    for name, table in tables:
        write_table(root / f"{name}.parquet", table, manifest)
    n_prompts, n_tokens = prompt_table.num_rows, token_table.num_rows
    specs = _array_plan(manifest.model, manifest.capture, n_prompts, n_tokens)
    for spec in specs:
        create_array(root, spec, _attributes(manifest.model, spec))
    # Checksums of the tables now (not only at the end), so a reader of a warehouse that is
    # still being written, or whose ingest stopped, can tell an edited table too.
    manifest.tables = {
        name: {
            "path": f"{name}.parquet",
            "rows": table.num_rows,
            "sha256": sha256_file(root / f"{name}.parquet"),
        }
        for name, table in tables
    }
    manifest.arrays = {s.key: s.to_json() for s in specs}
    write_coords(root, manifest)  # once per warehouse: the batches never touch them
    save_manifest(root, manifest)
    return manifest


def ingest(
    cfg: IngestConfig,
    show_progress: bool = True,
    loaded: LoadedModel | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Run (or resume) an ingest; returns the final manifest. `loaded` reuses a model that
    is already in memory (it must be the one `cfg.model` names); `on_progress(n)` hears of
    every n prompts done (the Ray driver sums the shards' progress with it)."""
    _check_options(cfg)
    root = Path(cfg.out)
    if root.is_symlink():
        raise WarehouseError(
            f"{root} is a symbolic link; a warehouse holds plain files only: give the real "
            "folder as --out"
        )
    if root.exists() and not root.is_dir():
        raise WarehouseError(f"{root} exists and is a file, not a folder; choose a new --out")
    if root.exists() and not is_warehouse(root) and any(root.iterdir()):
        raise WarehouseError(f"{root} exists and is not a warehouse; choose an empty or new --out")
    dataset = load_dataset(cfg.dataset)
    prompts = select_prompts(cfg, dataset)
    if loaded is None:
        loaded = load_model(cfg.model, dtype=cfg.model_dtype, device=cfg.device)
    plan = _plan(cfg, loaded, dataset, len(prompts))
    if not is_warehouse(root):
        _create(root, plan, loaded, prompts, cfg.shard)
    # One writer at a time; what it finds is read under the lock, so of two runs started
    # together one writes and the other is told who holds the warehouse.
    with WriterLock(root, "ingest"):
        manifest = load_manifest(root)
        plan = _as_planned(plan, manifest, cfg.shared_prefix)
        want = fingerprint_of({**plan, "shard": _shard_key(cfg.shard)})
        if manifest.fingerprint != want:
            legacy = fingerprint_of({**_legacy_plan(plan), "shard": _shard_key(cfg.shard)})
            want = legacy if manifest.fingerprint == legacy else want
        if manifest.fingerprint != want:
            old = {k: getattr(manifest, k).to_json() for k in ("model", "dataset", "capture")}
            old["shard"] = _shard_key(manifest.shard)
            diff = "; ".join(_differences(old, {**plan, "shard": _shard_key(cfg.shard)}))
            diff = diff or "options differ"
            raise WarehouseError(
                f"{root} holds a warehouse made with other inputs ({diff}); "
                "nothing was changed: use a new --out, or re-run with the original options"
            )
        if manifest.complete:
            return manifest
        remove_temp_entries(root, recursive=True)  # what a killed run left
        return _run_batches(
            root, manifest, loaded, show_progress, on_progress, cfg.on_nonfinite, cfg.writer_thread
        )


def _shard_key(shard: tuple[int, int] | dict | None) -> dict | None:
    if shard is None:
        return None
    if isinstance(shard, dict):
        return {"index": shard.get("index"), "count": shard.get("count")}
    return {"index": shard[0], "count": shard[1]}


def _resume_batch(
    batches: list[tuple[int, int]], offsets: np.ndarray, state: State, tokens: bool
) -> int:
    """The last batch whose start lies within what is on disk: every earlier prompt's
    responses (and tokens) are stored, and its own rows below the marks will be dropped."""
    first = 0
    for b, (s, _) in enumerate(batches):
        if s <= state.prompts_committed and (not tokens or offsets[s] <= state.tokens_committed):
            first = b
    return first


def _on_thread(writer_thread: bool | None, loaded: LoadedModel) -> bool:
    """Whether the writer runs on a thread of its own; None: only beside an accelerator's
    forward, not beside a CPU's, which uses every core (store/writer.py)."""
    return loaded.device.type != "cpu" if writer_thread is None else writer_thread


def _run_batches(
    root: Path,
    manifest: Manifest,
    loaded: LoadedModel,
    show_progress: bool,
    on_progress: Callable[[int], None] | None = None,
    on_nonfinite: str = "warn",
    writer_thread: bool | None = None,
) -> Manifest:
    """Capture and write every batch not yet on disk, then mark the warehouse complete."""
    cap = manifest.capture
    n_tok, offsets, ids = _stored_prompts(root)
    batches = batch_ranges(n_tok, cap.batch_size)
    state = manifest.state
    tokens = cap.per_token
    first = _resume_batch(batches, offsets, state, tokens)
    buffers = _buffers(root, manifest)
    tally = _NonFiniteTally(manifest.nonfinite or {})

    def commit(now: dict[str, int]) -> None:
        tok = [v for k, v in now.items() if k.startswith("activations/")]
        res = [v for k, v in now.items() if k.startswith("responses/")]
        if tok and not res:  # every pooling derived: a prompt is on disk with its tokens
            res = [int(np.searchsorted(offsets + n_tok, min(tok), "right"))]
        state.commit(tokens=min(tok) if tok else 0, prompts=min(res) if res else 0)
        # Counts of the batches a resume from here would not run again.
        tally.record(manifest, _resume_batch(batches, offsets, state, tokens))
        save_manifest(root, manifest)

    capturer = _capturer(loaded, cap)
    writer = Writer(buffers, commit, background=_on_thread(writer_thread, loaded))
    done = batches[first][0] if batches else 0
    progress = _Progress(len(n_tok), int(n_tok.sum()), done, show_progress)

    def hand_over(b: int, rows: dict, ready, check: np.ndarray | None) -> None:
        """Batch b to the writer, once its check says every value is finite; otherwise
        it is run again and counted exactly, then stored or refused."""
        s, e = batches[b]
        if ready is not None:
            ready.synchronize()
        if check is not None and not np.isfinite(check).all():
            counts: dict = {}
            rows, ready = capturer.run(ids[s:e], counts), capturer.ready
            if on_nonfinite == "error" and counts:
                raise WarehouseError(_nonfinite_stop(root, s, e, counts, cap.dtype))
            tally.add(b, counts)
        writer.put(_by_array(rows, s, offsets), ready=ready)
        progress.advance(e - s, int(n_tok[s:e].sum()), writer.bytes_written)
        if on_progress is not None:
            on_progress(e - s)

    try:
        with progress, skips_older_objects():
            _capture_all(capturer, ids, batches, first, hand_over)
            writer.close()
    finally:
        writer.close(finish=False)  # (nothing left to do after a close that finished)
    _finish(root, manifest, buffers, tally)
    return manifest


def _stored_prompts(root: Path) -> tuple[np.ndarray, np.ndarray, list]:
    """The stored prompts' token counts and token offsets, and each prompt's token ids: the
    run reads its batches back from the tables, so a resume runs exactly what was planned."""
    names = ["n_tokens", "token_offset"]
    n_tok, offsets = numpy_columns(read_table(root / "prompts.parquet", names), names)
    n_tok = n_tok.astype(np.int64)
    ids = token_ids_by_prompt(read_table(root / "tokens.parquet"), len(n_tok))
    return n_tok, offsets, ids


def _buffers(root: Path, manifest: Manifest) -> dict[str, ChunkBuffer]:
    """A chunk buffer per array, each starting at its kind's committed mark (token rows for
    activations, prompt rows for responses)."""
    out = {}
    for k, spec in array_specs(manifest).items():
        kind = "tokens" if k.startswith("activations/") else "prompts"
        out[k] = ChunkBuffer(root, spec, manifest.state.committed(kind))
    return out


def _capturer(loaded: LoadedModel, cap: Capture) -> Capturer:
    """The capturer of the manifest's sites, layers, pooling and dtype. wait=False: on a GPU
    a batch's copies are not waited for; `hand_over` waits on its event, so the next batch's
    forward is queued meanwhile."""
    if cap.prefix not in (None, PACKED):
        raise WarehouseError(
            f"the warehouse was planned with prefix method {cap.prefix!r}, which this version "
            f"does not know ({PACKED!r} or none); ingest it with the version that made it"
        )
    sites = {s: cap.layers for s in cap.sites}
    return Capturer(
        loaded.model,
        loaded.tokenizer.pad_token_id,
        CaptureSpec(sites, cap.per_token, cap.stored_pooling, cap.dtype),
        wait=False,
        shared_prefix=cap.prefix == PACKED,
    )


def _finish(
    root: Path, manifest: Manifest, buffers: dict[str, ChunkBuffer], tally: _NonFiniteTally
) -> None:
    """Record the checksums (the writer's own where it computed them), the non-finite counts,
    and mark the warehouse complete."""
    digests = {k: d for k, b in buffers.items() if (d := b.checksum()) is not None}
    finalize_checksums(root, manifest, digests)
    tally.record(manifest, None)
    if manifest.nonfinite:
        _warn_nonfinite(root, manifest)
    manifest.state.mark_complete()
    save_manifest(root, manifest)


def _capture_all(
    capturer: Capturer,
    ids: list,
    batches: list[tuple[int, int]],
    first: int,
    hand_over: Callable[..., None],
) -> None:
    """Capture batches first, first + 1, ... and hand each over with its rows, its CUDA
    event and its check. On a GPU a batch is handed over once the next one is queued, so
    waiting for its check never leaves the GPU idle; on the CPU at once."""
    held = None
    for b in range(first, len(batches)):
        s, e = batches[b]
        # No other name holds the rows past the hand-over: while the next batch is captured,
        # only the queue and the writer hold this one (and `held`, on a GPU).
        item = (b, capturer.run(ids[s:e]), capturer.ready, capturer.check)
        if held is not None:
            hand_over(*held)
            held = None
        if item[2] is None:
            hand_over(*item)
        else:
            held = item
        del item
    if held is not None:
        hand_over(*held)


class _NonFiniteTally:
    """The manifest's count of non-finite stored values: a resumed run's earlier batches
    (from its manifest) plus this run's batches that a resume would not run again, so that
    no batch is counted twice. Batches are added by the loop, recorded by the writer."""

    def __init__(self, base: dict) -> None:
        self.base = base
        self.by_batch: dict[int, dict] = {}
        self.lock = threading.Lock()

    def add(self, batch: int, counts: dict) -> None:
        if counts:
            with self.lock:
                self.by_batch[batch] = counts

    def record(self, manifest: Manifest, before: int | None) -> None:
        """Set the manifest's field to the counts of batches before `before` (None: all)."""
        with self.lock:
            parts = [c for b, c in self.by_batch.items() if before is None or b < before]
        total = add_nonfinite(self.base, *parts)
        manifest.nonfinite = total or None  # absent when every value is finite


def _nonfinite_stop(root: Path, s: int, e: int, counts: dict, dtype: str) -> str:
    found = "; ".join(describe_nonfinite(counts, dtype, names=3))
    return (
        f"{root}: prompt rows {s}..{e - 1} would store non-finite values ({found}); stopped "
        "before them (--on-nonfinite error), earlier batches are kept: re-run with "
        "--on-nonfinite warn to store them (stats then skips those neurons)"
    )


def _warn_nonfinite(root: Path, manifest: Manifest) -> None:
    found = "; ".join(describe_nonfinite(manifest.nonfinite, manifest.capture.dtype))
    log.warning(
        "warning: %s stores NaN or infinite values: %s; `warehouse info` lists them and "
        "`warehouse stats` skips those neurons",
        root,
        found,
    )


def _by_array(rows: dict[str, np.ndarray], s: int, offsets: np.ndarray) -> dict:
    """A captured batch as the writer takes it: array key -> (first row, rows)."""
    return {k: (int(offsets[s]) if k.startswith("activations/") else s, v) for k, v in rows.items()}


class _Progress:
    """The ingest's progress line: prompts (rate, ETA), with tokens/s and MB written."""

    def __init__(self, n_prompts: int, n_tokens: int, done: int, enabled: bool) -> None:
        self.line = Progress("ingest", n_prompts, unit="prompts", enabled=enabled, done=done)
        self.tokens = 0
        self.t0 = time.perf_counter()

    def __enter__(self) -> _Progress:
        self.line.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.line.__exit__(*exc)

    def advance(self, prompts: int, tokens: int, bytes_written: int) -> None:
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        self.line.advance(prompts, info=f"{rate:,.0f} tok/s  {bytes_written / 1e6:,.1f} MB written")
