"""`warehouse eval`: deactivate a selection's neurons and score greedy answers (paper step 4).

For each *condition* -- the whole selection, or its top-k neurons by rank for each count of a
sweep (`top_counts`, or `fractions` of the site's neurons) -- the model greedily decodes up to
`max_new_tokens` tokens for each chosen prompt with those units zeroed at every position
(`analysis.ablation`), and `controls` random neuron sets of the same per-layer shape, disjoint
from the condition's neurons and seeded `seed + i`, do the same. An answer is scored against the
fact's object and aliases (`score`).

Files, all of one schema (`EVAL_SCHEMA`), so DuckDB/Polars read `evals/*.parquet` as one view:

- `evals/baseline.parquet` (+ `baseline.json`): answers with no ablation,
  `selection = "baseline"`: of *every* prompt of the warehouse for `--baseline`, else of the
  prompts the requests so far scored; a request answers only its prompts that are missing.
  Reused while the model, model dtype and `max_new_tokens` match (another scoring rule,
  `scoring.RULES`, only rescores it); `warehouse stats --filter-correct` reads its
  `prompt_id` and `correct`, and refuses a file that lacks some of the prompts it counts.
- `evals/<selection>__<key>.parquet` (+ `.json`): one file per distinct `run_eval` request,
  `<key>` the first 12 hex digits of the request's fingerprint (`request_key`); the same
  request again reuses it while its baseline is the same.

Each sidecar records its cache key (store/fingerprint.py): the baseline's derives from the
warehouse's fingerprint, a results file's from the baseline's.

Batches: prompts are ordered by (split, token count, prompt_row), cut into batches within a
split and left-padded, so a condition over a whole split runs exactly the baseline's batches
and an empty ablation repeats the baseline's computation (answers of a padded prompt can
depend, in float rounding, on the other prompts of its batch).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from warehouse.analysis.ablation import (
    Neurons,
    ablate_rows,
    control_ids,
    neuron_indices,
    split_ids,
)
from warehouse.analysis.selections import Selection, read_selection
from warehouse.ingest.generation import answer
from warehouse.ingest.models import LoadedModel, load_model
from warehouse.ingest.scoring import rule_name, score
from warehouse.ingest.tokens import token_ids_by_prompt
from warehouse.store.errors import ModelError, WarehouseError
from warehouse.store.fingerprint import (
    CacheKey,
    fingerprint,
    is_current,
    read_sidecar,
    result_fingerprint,
    short_id,
    warehouse_fingerprint,
    write_sidecar,
)
from warehouse.store.format import (
    BASELINE,
    EVAL_SCHEMA,
    EVALS_DIR,
    PROMPTS_FILE,
    SPLITS,
    TOKENS_FILE,
)
from warehouse.store.location import local_folder
from warehouse.store.lock import WriterLock
from warehouse.store.manifest import Manifest, load_manifest
from warehouse.store.progress import Progress
from warehouse.store.tables import read_table, table_of, write_table

EVAL_STEP = "eval"  # the step name of a results file's cache key


@dataclass
class EvalConfig:
    """Options of `warehouse eval` (see the module docstring)."""

    selection: str | None = None  # a name in W/selections/; None: the baseline only
    top_counts: list[int] | None = None  # a sweep over the top-k neurons by rank
    fractions: list[float] | None = None  # ... or over fractions of the site's neurons
    controls: int = 10  # random sets per condition (the paper averages 10)
    seed: int = 0  # control i uses seed + i
    relations: list[str] | None = None  # None: all of the warehouse's
    languages: list[str] | None = None
    split: str = "test"  # identify | test | all
    templates: list[str] | None = None  # None: every template; else only prompts of these
    # At most this many prompts per (relation, language, split), the same ones in every call
    # (smallest sha256 of "prompt_id"), so conditions evaluated apart share their prompts.
    sample: int | None = None
    max_new_tokens: int = 2
    match: str = "prefix"  # prefix | paper-prefix | starts-with | contains
    batch_size: int = 32
    # Rows of one forward pass: the conditions of one batch run stacked up to this many rows
    # (each row's answer is computed as it is alone); 1 runs one condition per pass.
    stack_rows: int = 256
    # Run each prompt batch's shared leading tokens once per neuron set (ingest/prefix.py's
    # plan), then the rest on their cache: the same answers but at near-ties (last float bits).
    shared_prefix: bool = True
    model: str | None = None  # None: the manifest's model; else a copy of its weights
    model_dtype: str | None = None  # None: the dtype the warehouse was ingested at
    device: str = "cpu"
    baseline: bool = False  # compute (or reuse) evals/baseline.parquet even without selection
    force: bool = False  # recompute what this call asks for even when a cached file matches


@dataclass(frozen=True)
class Condition:
    """One set of neurons to deactivate: the selection's top `count`, or a control of it."""

    count: int
    fraction: float | None
    control_seed: int | None
    neuron_ids: np.ndarray  # (count,) int64


def batches(prompts: pl.DataFrame, batch_size: int) -> list[list[int]]:
    """Positions into `prompts` of each batch: ordered by (split, n_tokens, prompt_row), cut
    within each split, so a split's batches do not depend on which other splits run."""
    order = prompts.with_row_index("_i").sort(["split", "n_tokens", "prompt_row"])
    out: list[list[int]] = []
    for part in order.partition_by("split", maintain_order=True):
        idx = part["_i"].to_list()
        out += [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    return out


# ------------------------------------------------------------------------------ inputs


def _check_options(cfg: EvalConfig) -> None:
    if cfg.selection is None and not cfg.baseline:
        raise WarehouseError("nothing to evaluate: give a selection name, or --baseline")
    if cfg.split not in SPLITS:
        raise WarehouseError(f"unknown split {cfg.split!r}; choose from {', '.join(SPLITS)}")
    rule_name(cfg.match)
    if cfg.max_new_tokens < 1:
        raise WarehouseError("--max-new-tokens must be at least 1")
    if cfg.batch_size < 1:
        raise WarehouseError("--batch-size must be at least 1")
    if cfg.stack_rows < 1:
        raise WarehouseError("--stack-rows must be at least 1")
    if cfg.sample is not None and cfg.sample < 1:
        raise WarehouseError(f"--sample must be at least 1, got {cfg.sample}")
    if cfg.controls < 0:
        raise WarehouseError("--controls must be 0 or more")
    if cfg.top_counts is not None and cfg.fractions is not None:
        raise WarehouseError("give --top-counts or --fractions, not both")
    if cfg.top_counts is not None:
        if not cfg.top_counts or any(int(k) != k or k < 0 for k in cfg.top_counts):
            raise WarehouseError(f"--top-counts must be integers >= 0, not {cfg.top_counts}")
    if cfg.fractions is not None:
        if not cfg.fractions or any(not 0 < f <= 1 for f in cfg.fractions):
            raise WarehouseError(f"--fractions must lie in (0, 1], not {cfg.fractions}")


def _read_prompts(root: Path) -> tuple[pl.DataFrame, list[list[int]]]:
    """prompts.parquet (the columns eval needs) and each prompt_row's stored token ids."""
    cols = ["prompt_row", "prompt_id", "relation", "language", "split", "object", "aliases"]
    cols += ["template"]
    prompts = pl.from_arrow(read_table(root / PROMPTS_FILE, columns=[*cols, "n_tokens"]))
    assert isinstance(prompts, pl.DataFrame)
    tokens = read_table(root / TOKENS_FILE, columns=["prompt_row", "token_id"])
    return prompts, token_ids_by_prompt(tokens, prompts.height)


def choose_prompts(prompts: pl.DataFrame, cfg: EvalConfig) -> pl.DataFrame:
    """The prompts of cfg's split, relations and languages; unknown names are errors."""
    for what, wanted in (("relation", cfg.relations), ("language", cfg.languages)):
        known = sorted(prompts[what].unique().to_list())
        unknown = sorted(set(wanted or ()) - set(known))
        if unknown:
            raise WarehouseError(
                f"unknown {what}(s) {', '.join(unknown)}; this warehouse has: {', '.join(known)}"
            )
    keep = prompts
    if cfg.split != "all":
        keep = keep.filter(pl.col("split") == cfg.split)
    if cfg.relations:
        keep = keep.filter(pl.col("relation").is_in(cfg.relations))
    if cfg.languages:
        keep = keep.filter(pl.col("language").is_in(cfg.languages))
    if cfg.templates is not None:
        keep = keep.filter(pl.col("template").is_in(cfg.templates))
    if keep.is_empty():
        splits = ", ".join(sorted(prompts["split"].unique().to_list()))
        raise WarehouseError(
            f"no prompts match split {cfg.split!r}, relations {cfg.relations or 'all'} and "
            f"languages {cfg.languages or 'all'} (splits present: {splits})"
        )
    return keep if cfg.sample is None else sample_prompts(keep, cfg.sample)


def sample_prompts(prompts: pl.DataFrame, n: int) -> pl.DataFrame:
    """At most `n` prompts of each (relation, language, split): those with the smallest
    sha256 of their prompt_id, so a prompt is chosen regardless of what else is asked for."""
    key = [hashlib.sha256(str(i).encode()).hexdigest()[:16] for i in prompts["prompt_id"].to_list()]
    return (
        prompts.with_columns(pl.Series("_key", key))
        .filter(pl.col("_key").rank("ordinal").over("relation", "language", "split") <= n)
        .drop("_key")
    )


def check_selection(sel: Selection, manifest: Manifest) -> None:
    """A selection applies to a warehouse's model: same weights, layers and site width."""
    model = manifest.model
    if sel.weights_hash != model.weights_hash:
        raise WarehouseError(
            f"selection {sel.name!r} was made for another model (weights {sel.weights_hash}); "
            f"this warehouse's model {model.name!r} has {model.weights_hash}"
        )
    if sel.n_layers != model.n_layers:
        raise WarehouseError(
            f"selection {sel.name!r} counts {sel.n_layers} layers; the model has {model.n_layers}"
        )
    width = (model.units or {}).get(sel.site)
    if width is not None and width != sel.units:
        raise WarehouseError(
            f"selection {sel.name!r} counts {sel.units} units per layer for {sel.site}; the "
            f"model's {sel.site} has {width}: it belongs to another site"
        )
    split_ids(sel.neuron_ids, sel.units, sel.n_layers)


def conditions(sel: Selection, cfg: EvalConfig) -> list[Condition]:
    """The target conditions of cfg's sweep, each followed by its `cfg.controls` controls."""
    total = sel.units * sel.n_layers
    if cfg.top_counts is not None:
        sweep = [(int(k), None) for k in sorted(set(cfg.top_counts))]
    elif cfg.fractions is not None:
        sweep = [(round(f * total), float(f)) for f in sorted(set(cfg.fractions))]
    else:
        sweep = [(len(sel.neuron_ids), None)]
    out: list[Condition] = []
    for count, fraction in sweep:
        if count > len(sel.neuron_ids):
            asked = f"fraction {fraction} ({count} neurons)" if fraction else f"top {count}"
            raise WarehouseError(
                f"{asked} asked for, but selection {sel.name!r} holds only "
                f"{len(sel.neuron_ids)} neurons"
            )
        target = sel.neuron_ids[:count]
        out.append(Condition(count, fraction, None, target))
        if count == 0:
            continue  # a control of nothing is the baseline again
        for i in range(cfg.controls):
            ids = control_ids(target, sel.units, sel.n_layers, cfg.seed + i)
            out.append(Condition(count, fraction, cfg.seed + i, ids))
    return out


# ------------------------------------------------------------------------------ the model


class _Runner:
    """The model (loaded on first use and checked against the manifest) and token ids."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        cfg: EvalConfig,
        token_ids: list[list[int]],
        loaded: LoadedModel | None,
    ) -> None:
        self.root, self.manifest, self.cfg = root, manifest, cfg
        self.token_ids = token_ids
        self._given = loaded

    @cached_property
    def loaded(self) -> LoadedModel:
        loaded = self._given or self._load()
        want = self.manifest.model.weights_hash
        if loaded.weights_hash != want:
            raise WarehouseError(
                f"model {loaded.name!r} has weights {loaded.weights_hash}, but {self.root} was "
                f"made from {want}; pass --model with that model (or a copy of its weights)"
            )
        return loaded

    def _load(self) -> LoadedModel:
        model = self.manifest.model
        dtype = model_dtype(self.manifest, self.cfg)
        spec = self.cfg.model or model.name
        try:
            return load_model(spec, dtype=dtype, device=self.cfg.device)
        except ModelError:
            # A relative path in the manifest may not resolve from here; its source might.
            source = model.source
            if self.cfg.model or not source or source == spec or not Path(source).exists():
                raise
            return load_model(source, dtype=dtype, device=self.cfg.device)

    def answers(
        self,
        prompts: pl.DataFrame,
        neurons: Neurons | None,
        advance: Callable[[int], None],
    ) -> list[str]:
        """Decoded greedy continuations of `prompts` (in their order) under an ablation."""
        return self.answers_under(prompts, [neurons or {}], advance)[0]

    def answers_under(
        self,
        prompts: pl.DataFrame,
        ablations: Sequence[Neurons],
        advance: Callable[[int], None],
    ) -> list[list[str]]:
        """`answers` of `prompts` under each ablation, stacked on each batch (`stacked`)."""
        return self.answer_all([(prompts, ablations, self.cfg.batch_size)], advance)[0]

    def answer_all(
        self,
        work: Sequence[tuple[pl.DataFrame, Sequence[Neurons], int]],
        advance: Callable[[int], None],
    ) -> list[list[list[str]]]:
        """Answers of each (prompts, ablations, batch size) item, [item][ablation][prompt]: the
        ablations of every item that runs on the same prompt batch are stacked on it."""
        # prompt rows of a batch -> (item, ablation, positions in that item's prompts)
        jobs: dict[tuple[int, ...], list[tuple[int, int, list[int]]]] = {}
        for i, (prompts, ablations, batch_size) in enumerate(work):
            rows = prompts["prompt_row"].to_list()
            for batch in batches(prompts, batch_size):
                jobs.setdefault(tuple(rows[p] for p in batch), []).extend(
                    (i, c, batch) for c in range(len(ablations))
                )
        out = [[[""] * prompts.height for _ in ablations] for prompts, ablations, _ in work]
        for key, todo in jobs.items():
            texts = self.stacked(list(key), [work[i][1][c] for i, c, _ in todo], advance)
            for (i, c, batch), answers in zip(todo, texts, strict=True):
                for p, text in zip(batch, answers, strict=True):
                    out[i][c][p] = text
        return out

    def stacked(
        self, prompt_rows: list[int], ablations: Sequence[Neurons], advance: Callable[[int], None]
    ) -> list[list[str]]:
        """Answers of one batch under each ablation: one forward over the batch repeated for
        as many ablations as `cfg.stack_rows` rows hold (`ablate_rows`), each row computed as
        it is alone."""
        loaded = self.loaded
        ids = [self.token_ids[r] for r in prompt_rows]
        per = max(1, self.cfg.stack_rows // len(ids))
        out: list[list[str]] = []
        for start in range(0, len(ablations), per):
            group = ablations[start : start + per]
            with ablate_rows(loaded.model, group):
                texts = answer(
                    loaded,
                    ids * len(group),
                    self.cfg.max_new_tokens,
                    blocks=len(group),
                    shared_prefix=self.cfg.shared_prefix,
                )
            out += [texts[k * len(ids) : (k + 1) * len(ids)] for k in range(len(group))]
            advance(len(ids) * len(group))
        return out


def condition_neurons(
    model: torch.nn.Module, sel: Selection, conds: list[Condition]
) -> list[Neurons]:
    """Each condition's units to zero, per layer of the selection's site."""
    return [
        {sel.site: neuron_indices(model, sel.site, c.neuron_ids, expected_units=sel.units)}
        for c in conds
    ]


def model_dtype(manifest: Manifest, cfg: EvalConfig) -> str:
    return cfg.model_dtype or manifest.capture.model_dtype or "float32"


# ------------------------------------------------------------------------------ the run


def _table(rows: dict[str, list]) -> pa.Table:
    return table_of(rows, EVAL_SCHEMA)


def _scored(
    prompts: pl.DataFrame, generated: list[str], match: str, selection: str, cond: Condition | None
) -> dict[str, list]:
    objects, aliases = prompts["object"].to_list(), prompts["aliases"].to_list()
    correct = [
        score(g, o, a or (), match) for g, o, a in zip(generated, objects, aliases, strict=True)
    ]
    n = prompts.height
    return {
        "selection": [selection] * n,
        "count": [None if cond is None else cond.count] * n,
        "fraction": [None if cond is None else cond.fraction] * n,
        "control_seed": [None if cond is None else cond.control_seed] * n,
        "relation": prompts["relation"].to_list(),
        "language": prompts["language"].to_list(),
        "split": prompts["split"].to_list(),
        "prompt_id": prompts["prompt_id"].to_list(),
        "generated": generated,
        "correct": correct,
        "baseline_correct": correct,  # replaced for a condition (the baseline's answer)
    }


def _options_key(cfg: EvalConfig) -> dict[str, Any]:
    """The options that change a results file; where and how fast it runs does not."""
    skip = ("selection", "model", "model_dtype", "device", "baseline", "force", "batch_size")
    skip += ("stack_rows", "shared_prefix")
    key = {k: v for k, v in asdict(cfg).items() if k not in skip}
    if key["templates"] is None:
        del key["templates"]  # so files made before the option existed keep their key
    for k in ("relations", "languages", "top_counts", "fractions", "templates"):
        if key.get(k) is not None:
            key[k] = sorted(set(key[k]))
    key["rule"] = rule_name(cfg.match)
    return key


def baseline_path(root: Path) -> Path:
    return Path(root) / EVALS_DIR / f"{BASELINE}.parquet"


def baseline_key(manifest: Manifest, cfg: EvalConfig) -> CacheKey:
    """The cache key of evals/baseline.parquet: derived from the warehouse (its model and
    prompts), with the model dtype, the answer length and the scoring rule."""
    options = {
        "model_dtype": model_dtype(manifest, cfg),
        "max_new_tokens": cfg.max_new_tokens,
        "rule": rule_name(cfg.match),
    }
    return CacheKey(warehouse_fingerprint(manifest), BASELINE, options)


def same_answers(side: dict[str, Any] | None, key: CacheKey) -> bool:
    """The baseline a sidecar describes has the answers `key` asks for: its key differs at
    most in the scoring rule, so rescoring the stored text makes it current."""
    old = side.get("key") if side is not None else None
    if not (isinstance(old, dict) and isinstance(old.get("options"), dict)):
        return False

    def answers(options: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in options.items() if k != "rule"}

    return (old.get("parent"), old.get("step"), answers(old["options"])) == (
        key.parent,
        key.step,
        answers(key.options),
    )


def baseline_prompts(
    prompts: pl.DataFrame, chosen: pl.DataFrame | None, cfg: EvalConfig
) -> pl.DataFrame:
    """The prompts whose baseline answers a request needs: every prompt for `--baseline` (or
    a request without a selection), else only the ones it scores."""
    return prompts if cfg.baseline or cfg.selection is None or chosen is None else chosen


def baseline_state(
    path: Path, key: CacheKey, cfg: EvalConfig, needed: pl.DataFrame
) -> tuple[dict[int, str] | None, pl.DataFrame, bool]:
    """(the stored answers of the model and options of `key`, or None when there are none or
    they are to be made anew; the `needed` prompts they lack; whether the file is current,
    scored under `key`'s rule too)."""
    recompute = cfg.force and (cfg.baseline or cfg.selection is None)
    if recompute or not path.is_file() or not same_answers(read_sidecar(path), key):
        return None, needed, False
    stored = stored_answers(path)
    missing = needed.filter(~pl.col("prompt_id").is_in(list(stored)))
    return stored, missing, is_current(path, key)


def stored_answers(path: Path) -> dict[int, str]:
    """prompt_id -> generated text of a baseline file."""
    t = read_table(path, columns=["prompt_id", "generated"])
    ids, texts = t.column("prompt_id").to_pylist(), t.column("generated").to_pylist()
    return dict(zip(ids, texts, strict=True))


def _baseline(
    root: Path,
    prompts: pl.DataFrame,
    runner: _Runner,
    cfg: EvalConfig,
    progress: Progress,
    needed: pl.DataFrame | None = None,
) -> Path:
    """evals/baseline.parquet answering at least the `needed` prompts (default: all of
    `prompts`): reused, extended by the ones it lacks, rescored, or computed."""
    path = baseline_path(root)
    key = baseline_key(runner.manifest, cfg)
    wanted = prompts if needed is None else needed
    stored, missing, current = baseline_state(path, key, cfg, wanted)
    if current and missing.is_empty():
        return path
    # Stored answers under another scoring rule are rescored from their text, no generation.
    old = read_sidecar(path) if stored is not None else None
    timing = old.get("timing") if old is not None else None
    new: dict[int, str] = {}
    if not missing.is_empty():
        progress.add_total(missing.height)
        progress.advance(0, info=f"{BASELINE} ({missing.height} prompts)")
        t0 = time.perf_counter()
        generated = runner.answers(missing, None, progress.advance)
        seconds = round(time.perf_counter() - t0, 3)
        timing = {"seconds": seconds, "device": str(runner.loaded.device)}
        timing["prompts"] = missing.height
        new = dict(zip(missing["prompt_id"].to_list(), generated, strict=True))
    write_baseline_answers(path, prompts, (stored or {}) | new, key, cfg, timing)
    return path


def write_baseline_answers(
    path: Path,
    prompts: pl.DataFrame,
    answers: dict[int, str],
    key: CacheKey,
    cfg: EvalConfig,
    timing: dict[str, Any] | None,
) -> None:
    """The baseline file of `answers` (prompt_id -> text), in the warehouse's prompt order."""
    rows = prompts.filter(pl.col("prompt_id").is_in(list(answers)))
    texts = [answers[i] for i in rows["prompt_id"].to_list()]
    write_table(path, _table(_scored(rows, texts, cfg.match, BASELINE, None)))
    side = {
        "kind": BASELINE,
        "match": cfg.match,
        "batch_size": cfg.batch_size,
        "rows": rows.height,
        "timing": timing,
    }
    write_sidecar(path, key, side)


def run_eval(
    root: str | Path,
    cfg: EvalConfig,
    show_progress: bool = True,
    *,
    as_json: bool = False,
    loaded: LoadedModel | None = None,
) -> Path | dict[str, Any]:
    """Evaluate cfg.selection (and/or the baseline) on a warehouse; the results file's path, or
    its `summarize` dict with `as_json`. `loaded` reuses a model already in memory; it must
    have the manifest's weights, like any model this loads."""
    root = local_folder(root, "`warehouse eval`")  # remote warehouses are read-only
    _check_options(cfg)
    if cfg.selection is not None:
        path = run_evals(root, [cfg], show_progress, loaded=loaded)[0]
        return summarize(path) if as_json else path
    manifest = load_manifest(root)
    prompts, token_ids = _read_prompts(root)
    runner = _Runner(root, manifest, cfg, token_ids, loaded)
    with WriterLock(root, "eval"), eval_progress(show_progress) as progress:
        base_path = _baseline(root, prompts, runner, cfg, progress)
    return summarize(base_path) if as_json else base_path


# Options every request of one `run_evals` call shares: one model, one decoding, one rule.
SHARED = ("model", "model_dtype", "device", "max_new_tokens", "match", "stack_rows")
SHARED += ("shared_prefix",)


@dataclass
class _Request:
    """One selection's request of a `run_evals` call: its prompts, neuron sets and file."""

    cfg: EvalConfig
    sel: Selection
    chosen: pl.DataFrame
    conds: list[Condition]
    needed: pl.DataFrame  # the prompts its baseline answers
    path: Path = Path()
    key: CacheKey | None = None


def run_evals(
    root: str | Path,
    cfgs: Sequence[EvalConfig],
    show_progress: bool = True,
    *,
    loaded: LoadedModel | None = None,
) -> list[Path]:
    """`run_eval` of several requests with selections, one results file each, in order; the
    neuron sets of every request that runs on the same prompt batch share its forward passes
    (`_Runner.stacked`). The requests must share the `SHARED` options."""
    root = local_folder(root, "`warehouse eval`")
    if not cfgs:
        return []
    for cfg in cfgs:
        _check_options(cfg)
        if cfg.selection is None or any(getattr(cfg, k) != getattr(cfgs[0], k) for k in SHARED):
            raise WarehouseError(f"requests run together need a selection and equal {SHARED}")
    manifest = load_manifest(root)
    prompts, token_ids = _read_prompts(root)
    runner = _Runner(root, manifest, cfgs[0], token_ids, loaded)
    requests = [_request(root, manifest, prompts, cfg) for cfg in cfgs]
    with WriterLock(root, "eval"), eval_progress(show_progress) as progress:
        # Every baseline first: a later request may extend the file the keys derive from.
        for r in requests:
            base_path = _baseline(root, prompts, runner, r.cfg, progress, r.needed)
        for r in requests:
            r.path, r.key = results_path(root, r.sel, manifest, r.cfg, base_path)
        pending = [r for r in requests if r.cfg.force or not is_current(r.path, r.key)]
        _evaluate(pending, base_path, runner, progress)
    return [r.path for r in requests]


def _request(root: Path, manifest: Manifest, prompts: pl.DataFrame, cfg: EvalConfig) -> _Request:
    assert cfg.selection is not None
    chosen = choose_prompts(prompts, cfg)
    sel = read_selection(root, cfg.selection)
    check_selection(sel, manifest)
    return _Request(cfg, sel, chosen, conditions(sel, cfg), baseline_prompts(prompts, chosen, cfg))


def request_key(sel: Selection, manifest: Manifest, cfg: EvalConfig) -> dict[str, Any]:
    """Everything that determines a results file, but the baseline it is compared with."""
    return {
        "selection": sel.name,
        "selection_sha256": sel.sha256,
        "site": sel.site,
        "weights_hash": manifest.model.weights_hash,
        "model_dtype": model_dtype(manifest, cfg),
        "options": _options_key(cfg),
    }


def results_path(
    root: Path, sel: Selection, manifest: Manifest, cfg: EvalConfig, base_path: Path
) -> tuple[Path, CacheKey]:
    """The results file of this request and its cache key: the request, derived from the
    baseline it is compared with (whose key derives from the warehouse's)."""
    request = request_key(sel, manifest, cfg)
    # The name leaves the baseline out, so a recomputed baseline replaces this request's
    # file instead of adding a second one to the `evals` view; reuse needs both equal.
    path = Path(root) / EVALS_DIR / f"{sel.name}__{short_id(fingerprint(request))}.parquet"
    return path, CacheKey(result_fingerprint(base_path), EVAL_STEP, request)


def _evaluate(
    pending: list[_Request], base_path: Path, runner: _Runner, progress: Progress
) -> None:
    """Answer every neuron set of the pending requests, batch by batch: the sets of all
    requests that share a prompt batch run stacked on it; then write each results file."""
    model = runner.loaded.model
    t0 = time.perf_counter()
    sets = [condition_neurons(model, r.sel, r.conds) for r in pending]
    progress.add_total(sum(len(r.conds) * r.chosen.height for r in pending))
    progress.advance(0, info=f"{len(pending)} requests, {sum(map(len, sets))} neuron sets")
    work = [(r.chosen, s, r.cfg.batch_size) for r, s in zip(pending, sets, strict=True)]
    generated = runner.answer_all(work, progress.advance)
    seconds = round(time.perf_counter() - t0, 3)
    for i, r in enumerate(pending):
        timing = {
            "seconds": seconds,  # of the whole call: its requests shared the passes
            "requests": len(pending),
            "device": str(runner.loaded.device),
            "batch_size": r.cfg.batch_size,
        }
        assert r.key is not None
        write_results(
            r.path, r.sel, r.conds, r.chosen, base_path, generated[i], r.cfg, r.key, timing
        )


def write_results(
    path: Path,
    sel: Selection,
    conds: list[Condition],
    prompts: pl.DataFrame,
    base_path: Path,
    generated: list[list[str]],
    cfg: EvalConfig,
    key: CacheKey,
    timing: dict[str, Any],
) -> None:
    """The results file (and sidecar) of `conds` from each one's answers, in `prompts` order."""
    base = pl.from_arrow(read_table(base_path, columns=["prompt_id", "correct"]))
    assert isinstance(base, pl.DataFrame)
    baseline_correct = prompts.join(base, on="prompt_id", how="left")["correct"].to_list()
    parts: list[pa.Table] = []
    for cond, answers in zip(conds, generated, strict=True):
        rows = _scored(prompts, answers, cfg.match, sel.name, cond)
        rows["baseline_correct"] = baseline_correct
        parts.append(_table(rows))
    table = pa.concat_tables(parts) if parts else _table({n: [] for n in EVAL_SCHEMA.names})
    write_table(path, table)
    write_sidecar(path, key, {"kind": "ablation", "rows": table.num_rows, "timing": timing})


# ------------------------------------------------------------------------------ summary


def summarize(results: str | Path | pa.Table | pl.DataFrame) -> dict[str, Any]:
    """Accuracy per relation x language: the baseline's, and for each condition the target's
    and the controls' mean and sample standard deviation (null with fewer than two)."""
    if isinstance(results, str | Path):
        results = read_table(Path(results))
    df = results if isinstance(results, pl.DataFrame) else pl.from_arrow(results)
    assert isinstance(df, pl.DataFrame)
    names = df["selection"].unique().to_list()
    if len(names) > 1:
        raise WarehouseError(f"summarize one selection at a time, not {', '.join(sorted(names))}")
    name = names[0] if names else None
    group = ["relation", "language"]
    targets = df.filter(pl.col("control_seed").is_null())
    base = (
        targets.unique(["prompt_id"], keep="first")
        .group_by(group)
        .agg(prompts=pl.len(), accuracy=pl.col("baseline_correct").mean())
        .sort(group)
    )
    out: dict[str, Any] = {
        "selection": name,
        "baseline": base.to_dicts(),
        "conditions": [],
    }
    if name == BASELINE:
        return out
    cond_keys = targets.select("count", "fraction").unique(maintain_order=True).sort("count")
    for count, fraction in cond_keys.iter_rows():
        this = df.filter(pl.col("count") == count)
        if fraction is not None:
            this = this.filter(pl.col("fraction") == fraction)
        target = (
            this.filter(pl.col("control_seed").is_null())
            .group_by(group)
            .agg(
                prompts=pl.len(),
                baseline=pl.col("baseline_correct").mean(),
                target=pl.col("correct").mean(),
            )
        )
        # Sorted, order-keeping groups: float sums in a fixed order, the same summary each time.
        per_seed = (
            this.filter(pl.col("control_seed").is_not_null())
            .group_by([*group, "control_seed"])
            .agg(acc=pl.col("correct").mean())
            .sort([*group, "control_seed"])
            .group_by(group, maintain_order=True)
            .agg(
                controls=pl.len(),
                control_mean=pl.col("acc").mean(),
                control_std=pl.col("acc").std(ddof=1),
            )
        )
        rows = target.join(per_seed, on=group, how="left").sort(group)
        rows = rows.with_columns(pl.col("controls").fill_null(0))
        out["conditions"].append(
            {"count": count, "fraction": fraction, "results": _finite(rows.to_dicts())}
        )
    return out


def _finite(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # JSON has no NaN: a std of one control is reported as null.
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in rows
    ]


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of `summarize`'s dict (accuracies in %)."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    lines = [f"selection {summary['selection']}"]
    if not summary["conditions"]:
        lines.append(f"{'relation':<28}{'language':<10}{'prompts':>8}{'baseline %':>12}")
        for r in summary["baseline"]:
            lines.append(
                f"{r['relation']:<28}{r['language']:<10}{r['prompts']:>8}{pct(r['accuracy']):>12}"
            )
        return "\n".join(lines)
    head = f"{'count':>7}{'fraction':>10}  {'relation':<28}{'language':<10}{'prompts':>8}"
    lines.append(head + f"{'baseline %':>12}{'target %':>10}{'controls %':>16}")
    for c in summary["conditions"]:
        frac = "" if c["fraction"] is None else f"{c['fraction']:g}"
        for r in c["results"]:
            ctrl = "-"
            if r["controls"]:
                std = "" if r["control_std"] is None else f" ± {100 * r['control_std']:.1f}"
                ctrl = f"{pct(r['control_mean'])}{std}"
            lines.append(
                f"{c['count']:>7}{frac:>10}  {r['relation']:<28}{r['language']:<10}"
                f"{r['prompts']:>8}{pct(r['baseline']):>12}{pct(r['target']):>10}{ctrl:>16}"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ progress


def eval_progress(enabled: bool) -> Progress:
    """The eval's one line: every answer the run generates, with rate and ETA, and the
    condition that runs now; each condition adds its answers to the total as it is known."""
    return Progress("eval", 0, unit="answers", enabled=enabled)
