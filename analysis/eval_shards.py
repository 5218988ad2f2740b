"""`warehouse eval --shard i/n`: one slice of an evaluation, joined when every slice is done.

A shard answers a contiguous run of whole batches of the single-process plan (`batches`): of
the baseline prompts that the current baseline lacks (those the request scores, or every prompt
for `--baseline`), and of the chosen prompts under
every condition of the request. Whole batches give the same answers as one process (a padded
prompt's answer can depend on its batch), so the joined files are byte-identical to
`warehouse eval` without shards.

A shard writes its answers to `W/evals/parts/<request>/<i>-of-<n>.parquet` (+ `.json`),
where `<request>` is the first 16 hex digits of the parts' cache key (store/fingerprint.py:
everything that determines the answers, derived from the baseline's key). Whichever shard finishes
last (or `join_eval`, or the Ray driver) writes `evals/baseline.parquet` and the results file
from the parts exactly as `run_eval` would, then removes the parts. The `evals` view reads
`evals/*.parquet` only, so parts never show in queries.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from warehouse.analysis.evaluate import (
    EvalConfig,
    _baseline,
    _check_options,
    _read_prompts,
    _Runner,
    baseline_key,
    baseline_path,
    baseline_prompts,
    baseline_state,
    batches,
    check_selection,
    choose_prompts,
    condition_neurons,
    conditions,
    eval_progress,
    request_key,
    results_path,
    write_baseline_answers,
    write_results,
)
from warehouse.analysis.selections import read_selection
from warehouse.ingest.models import LoadedModel
from warehouse.ingest.shards import check_shard, shard_range
from warehouse.store.errors import WarehouseError
from warehouse.store.files import read_json
from warehouse.store.fingerprint import (
    CacheKey,
    entry_is_current,
    is_current,
    read_sidecar,
    short_id,
    write_sidecar,
)
from warehouse.store.format import BASELINE, EVAL_PART_SCHEMA, EVAL_PARTS, EVALS_DIR
from warehouse.store.manifest import Manifest, load_manifest
from warehouse.store.tables import read_table, write_table

PARTS_STEP = "eval-parts"  # the step name of a sharded request's parts


class Request:
    """What one sharded eval computes, derived identically by every shard."""

    def __init__(self, root: Path, cfg: EvalConfig, count: int) -> None:
        _check_options(cfg)
        self.root, self.cfg, self.count = Path(root), cfg, count
        self.manifest = load_manifest(self.root)
        self.prompts, self.token_ids = _read_prompts(self.root)
        self.sel = read_selection(self.root, cfg.selection) if cfg.selection else None
        self.chosen = choose_prompts(self.prompts, cfg) if self.sel is not None else None
        if self.sel is not None:
            check_selection(self.sel, self.manifest)
        self.conds = conditions(self.sel, cfg) if self.sel is not None else []
        self.base_key = baseline_key(self.manifest, cfg)
        self.needed = baseline_prompts(self.prompts, self.chosen, cfg)
        # The baseline answers to compute: the needed prompts the current file lacks.
        path = baseline_path(self.root)
        self.stored, self.missing, _ = baseline_state(path, self.base_key, cfg, self.needed)
        needed = self.missing.height  # prompts to answer; 0 (false) when none
        options = {
            "request": request_key(self.sel, self.manifest, cfg) if self.sel else None,
            "batch_size": cfg.batch_size,  # answers of padded batches depend on it
            "shards": count,
            "baseline_needed": needed,
            "results_needed": self.sel is not None and (needed > 0 or not self.results_cached()),
        }
        # Derived from the baseline the parts answer (or compare with).
        self.key = CacheKey(self.base_key.fingerprint, PARTS_STEP, options)
        self.folder = self.root / EVALS_DIR / EVAL_PARTS / short_id(self.key.fingerprint, 16)

    def results_cached(self) -> bool:
        """The current baseline's results file of this request is on disk already."""
        assert self.sel is not None
        path, key = results_path(
            self.root, self.sel, self.manifest, self.cfg, baseline_path(self.root)
        )
        return not self.cfg.force and is_current(path, key)

    def part(self, index: int) -> Path:
        return self.folder / f"{index}-of-{self.count}.parquet"


def _slice(frame: pl.DataFrame, batch_size: int, shard: tuple[int, int]) -> pl.DataFrame:
    """The rows of `frame` in shard i's run of whole batches (empty when there are fewer
    batches than shards: that shard has nothing to do)."""
    plan = batches(frame, batch_size)
    if shard[1] > len(plan):
        return frame.head(0) if shard[0] > len(plan) else frame[plan[shard[0] - 1]]
    order = [i for b in plan for i in b]
    n_tok = frame["n_tokens"].to_numpy()[order].astype(np.int64)
    starts = np.cumsum([0, *(len(b) for b in plan[:-1])]).tolist()
    s, e = shard_range(n_tok, starts, shard)
    return frame[sorted(order[s:e])]


def eval_shard(
    root: str | Path,
    cfg: EvalConfig,
    shard: tuple[int, int],
    *,
    loaded: LoadedModel | None = None,
    advance: Callable[[int], None] | None = None,
    join: bool = True,
    show_progress: bool = False,
) -> Path | None:
    """Answer shard i of n and write its part; returns the results file when this shard's
    part completed the set (and `join`), else None."""
    i, n = check_shard(shard)
    req = Request(Path(root), cfg, n)
    runner = _Runner(req.root, req.manifest, cfg, req.token_ids, loaded)
    tick = advance or (lambda k: None)
    rows: dict[str, list] = {"condition": [], "prompt_id": [], "generated": []}
    t0 = time.perf_counter()
    with eval_progress(show_progress) as progress:

        def step(k: int) -> None:
            progress.advance(k)
            tick(k)

        if req.key.options["baseline_needed"]:
            mine = _slice(req.missing, cfg.batch_size, (i, n))
            progress.add_total(mine.height)
            progress.advance(0, info=f"{BASELINE} shard {i}/{n}")
            if mine.height:
                _add(rows, -1, mine, runner.answers(mine, None, step))
        if req.sel is not None and req.chosen is not None and req.key.options["results_needed"]:
            mine = _slice(req.chosen, cfg.batch_size, (i, n))
            if mine.height:
                progress.add_total(len(req.conds) * mine.height)
                progress.advance(0, info=f"{req.sel.name}: {len(req.conds)} neuron sets {i}/{n}")
                ablations = condition_neurons(runner.loaded.model, req.sel, req.conds)
                for c, answers in enumerate(runner.answers_under(mine, ablations, step)):
                    _add(rows, c, mine, answers)
    req.folder.mkdir(parents=True, exist_ok=True)
    part = req.part(i)
    write_table(part, pa.table(rows, schema=EVAL_PART_SCHEMA))
    side = {
        "shard": [i, n],
        "rows": len(rows["prompt_id"]),
        "seconds": round(time.perf_counter() - t0, 3),
        "device": str(runner.loaded.device) if rows["prompt_id"] else None,
    }
    write_sidecar(part, req.key, side)
    return join_eval(root, cfg, n) if join else None


def _add(rows: dict[str, list], cond: int, prompts: pl.DataFrame, answers: list[str]) -> None:
    rows["condition"] += [cond] * prompts.height
    rows["prompt_id"] += prompts["prompt_id"].to_list()
    rows["generated"] += answers


def join_eval(root: str | Path, cfg: EvalConfig, count: int) -> Path | None:
    """Write the baseline and results files from all `count` parts of this request, or do
    nothing (None) while a part is missing. Returns the results file (the baseline's when the
    request has no selection)."""
    req = Request(Path(root), cfg, count)
    sides = [req.part(i).with_suffix(".json") for i in range(1, count + 1)]
    if not all(s.is_file() and req.part(k + 1).is_file() for k, s in enumerate(sides)):
        return None
    for k, s in enumerate(sides, 1):
        if not entry_is_current(read_sidecar(req.part(k)), req.key):
            raise WarehouseError(f"{s} belongs to another request; remove {req.folder}")
    parts = pl.concat(
        [pl.from_arrow(read_table(req.part(i))) for i in range(1, count + 1)]  # type: ignore[misc]
    )
    seconds = sum(read_json(s).get("seconds", 0.0) for s in sides)

    def answers_of(cond: int, prompts: pl.DataFrame) -> list[str]:
        got = parts.filter(pl.col("condition") == cond).select("prompt_id", "generated")
        joined = prompts.select("prompt_id").join(got, on="prompt_id", how="left")
        if joined["generated"].null_count():
            raise WarehouseError(
                f"the parts in {req.folder} lack answers for "
                f"{joined['generated'].null_count()} prompt(s); remove the folder and re-run"
            )
        return joined["generated"].to_list()

    base = baseline_path(req.root)
    if req.key.options["baseline_needed"]:
        timing = {"seconds": seconds, "device": f"{count} shards"}
        ids = req.missing["prompt_id"].to_list()
        answers = (req.stored or {}) | dict(zip(ids, answers_of(-1, req.missing), strict=True))
        write_baseline_answers(base, req.prompts, answers, req.base_key, cfg, timing)
    else:
        # a current baseline, maybe to rescore for another match mode: no model is needed
        no_model = _NoModel(req.manifest)
        _baseline(req.root, req.prompts, no_model, cfg, eval_progress(False), req.needed)  # type: ignore[arg-type]
    out = base
    if req.sel is not None and req.chosen is not None:
        out, key = results_path(req.root, req.sel, req.manifest, cfg, base)
        if req.key.options["results_needed"]:
            generated_by = [answers_of(c, req.chosen) for c in range(len(req.conds))]
            timing = {"seconds": seconds, "device": f"{count} shards", "batch_size": cfg.batch_size}
            write_results(out, req.sel, req.conds, req.chosen, base, generated_by, cfg, key, timing)
    shutil.rmtree(req.folder, ignore_errors=True)
    try:
        req.folder.parent.rmdir()  # evals/parts, when no other request's parts are left
    except OSError:
        pass
    return out


class _NoModel:
    """A runner for `_baseline` when the baseline is current: generating would be a bug."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    @property
    def loaded(self):
        raise WarehouseError("the baseline changed while the sharded eval ran; run it again")

    def answers(self, *a: Any, **kw: Any) -> list[str]:
        raise WarehouseError("the baseline changed while the sharded eval ran; run it again")
