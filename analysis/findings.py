"""The numbers of a study, computed from warehouse tables alone (no model is run).

`compute(root)` reads `study/study.json` (written by `warehouse study`), the `evals/` files it
names, `prompts.parquet` (each prompt's subject), the selections and
`study/perplexity.parquet`, and returns the *summary*: one JSON-able dict that
`analysis.report.render` draws and `warehouse report` saves as summary.json. Every accuracy is
a share in [0, 1] over the prompts named (`n`, with `n_subjects` distinct subjects beside it);
averages over relations are plain means of the per-relation numbers (each relation counts
once).

Every verdict comes from a test of `analysis.claims` (docs/statistics.md, "Tests behind every
verdict"): own set vs random sets by a sign-flip permutation test over subjects, own set vs
baseline and cross-relation gains by exact McNemar tests, Holm-corrected over the relations
(cells) of the study, with a minimum number of discordant prompts. A relation whose test
prompts hold fewer than `Rules.min_test_subjects` distinct subjects is *underpowered*: it
gets that verdict and no headline count includes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from warehouse.analysis import claims
from warehouse.analysis.claims import Rules
from warehouse.ingest.scoring import normalize_answer
from warehouse.store.errors import FormatError
from warehouse.store.format import BASELINE_FILE, PROMPTS_FILE, SELECTIONS_DIR, STUDY_FILE
from warehouse.store.location import Location

TOP_ANSWERS = 5  # most frequent answers per relation and condition in "errors"


def _read(root: Location, rel: str, columns: list[str] | None = None) -> pl.DataFrame:
    """A table of the warehouse, local or remote (read-only, e.g. a shared zip or URL);
    `columns` keeps those of them the file has."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from warehouse.store.derived import check_derived, is_derived

    if not root.isfile(rel):
        raise FormatError(f"{root}: {rel} is missing: re-run `warehouse study` to recompute it")
    data = root.read_bytes(rel)  # read whole, and a derived table checked, then parsed
    if is_derived(rel):
        check_derived(root, rel, data)
    try:
        with pa.BufferReader(data) as f:
            pf = pq.ParquetFile(f)
            cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
            frame = pl.from_arrow(pf.read(columns=cols))
    except (pa.ArrowInvalid, OSError) as e:
        raise FormatError(f"{root}: {rel} is not a readable Parquet file ({e})") from None
    assert isinstance(frame, pl.DataFrame)
    return frame


@dataclass
class _Study:
    """A study being summarised: where it is, its record, the rules and each prompt's
    subject."""

    root: Location
    st: dict[str, Any]
    rules: Rules
    subjects: pl.DataFrame  # prompt_id, subject
    underpowered: set[str] = field(default_factory=set)
    _frames: dict[str, pl.DataFrame] = field(default_factory=dict)  # eval files read so far

    @property
    def relations(self) -> list[str]:
        return self.st["relations"]

    @property
    def evals(self) -> dict[str, Any]:
        return self.st["evals"]

    def read(self, rel: str) -> pl.DataFrame:
        """An eval file with each row's `subject` (the prompt id when prompts.parquet lacks
        the prompt); each file is read once."""
        if rel not in self._frames:
            frame = _read(self.root, rel).join(self.subjects, on="prompt_id", how="left")
            self._frames[rel] = frame.with_columns(
                pl.coalesce("subject", pl.format("prompt {}", "prompt_id")).alias("subject")
            )
        return self._frames[rel]


def _subjects(root: Location) -> pl.DataFrame:
    """prompt_id -> subject: `subject_id` where prompts.parquet has it, else `subject`."""
    frame = _read(root, PROMPTS_FILE, ["prompt_id", "subject_id", "subject"])
    key = "subject_id" if "subject_id" in frame.columns else "subject"
    if key not in frame.columns:
        raise FormatError(f"{root}: {PROMPTS_FILE} has neither subject_id nor subject")
    return frame.select("prompt_id", pl.col(key).cast(pl.Utf8).alias("subject"))


def _mean(values: pl.Series) -> float | None:
    return None if values.len() == 0 else float(values.cast(pl.Float64).mean())  # type: ignore[arg-type]


def _drop(baseline: float | None, accuracy: float | None) -> float | None:
    if baseline is None or accuracy is None or baseline == 0:
        return None
    return (baseline - accuracy) / baseline


def _targets(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("control_seed").is_null())


def _control_rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("control_seed").is_not_null())


# ------------------------------------------------------------------- own set vs controls


def _effect(own: pl.DataFrame, ctrl: pl.DataFrame, rules: Rules) -> dict[str, Any]:
    """effect = mean over prompts of d = (mean over control sets of correct) - (own correct),
    its subject-cluster bootstrap interval and the sign-flip p-value."""
    if ctrl.height == 0:
        return {"effect": None, "effect_lo": None, "effect_hi": None, "p_controls": None}
    per_prompt = ctrl.group_by("prompt_id").agg(c=pl.col("correct").cast(pl.Float64).mean())
    paired = own.join(per_prompt, on="prompt_id").sort("prompt_id")
    d = (paired["c"] - paired["correct"].cast(pl.Float64)).to_numpy()
    subj = paired["subject"].to_list()
    lo, hi = claims.cluster_bootstrap(d, subj, resamples=rules.bootstrap, seed=rules.seed)
    p = claims.sign_flip_p(d, subj, draws=rules.permutations, seed=rules.seed)
    return {"effect": float(d.mean()), "effect_lo": lo, "effect_hi": hi, "p_controls": p}


def _controls(ctrl: pl.DataFrame) -> dict[str, Any]:
    """The random sets: their mean accuracy, the prediction interval of one set, how many."""
    per_seed = (
        ctrl.group_by("control_seed")
        .agg(pl.col("correct").cast(pl.Float64).mean())
        .sort("control_seed")  # a fixed order, so the sums round alike on every run
    )
    accs = per_seed["correct"].to_list()
    lo, hi = claims.prediction_interval(accs)
    return {
        "control_mean": float(np.mean(accs)) if accs else None,
        "control_pi_lo": lo,
        "control_pi_hi": hi,
        "control_n": len(accs),
    }


def _retention(own: pl.DataFrame, ctrl: pl.DataFrame) -> dict[str, Any]:
    per_set = [
        claims.retention(part["baseline_correct"], part["correct"])
        for _, part in ctrl.sort("control_seed", maintain_order=True).group_by(
            "control_seed", maintain_order=True
        )
    ]
    kept = [r for r in per_set if r is not None]
    return {
        "retention_own": claims.retention(own["baseline_correct"], own["correct"]),
        "retention_controls": float(np.mean(kept)) if kept else None,
        "retention_n": int(own["baseline_correct"].sum()),
    }


def controlled_row(frame: pl.DataFrame, rules: Rules) -> dict[str, Any]:
    """Every number of one controlled cell (own set and its random sets on the same prompts):
    accuracies, the controls, the effect and its test, own-off vs baseline (McNemar) and
    retention. Holm and the verdict come later, per family (`_judge`)."""
    own, ctrl = _targets(frame), _control_rows(frame)
    lost, gained = claims.discordant(own["baseline_correct"], own["correct"])
    return {
        "n": own.height,
        "n_subjects": own["subject"].n_unique(),
        "baseline": _mean(own["baseline_correct"]),
        "target": _mean(own["correct"]),
        **_controls(ctrl),
        **_effect(own, ctrl, rules),
        "lost": lost,
        "gained": gained,
        "p_mcnemar": claims.mcnemar_p(lost, gained),
        **_retention(own, ctrl),
    }


# Numbers of a cell the baseline leaves untestable: blanked, never shown as a value.
UNTESTED_KEYS = (
    *("target", "accuracy", "relative_drop", "control_mean", "control_pi_lo", "control_pi_hi"),
    *("effect", "effect_lo", "effect_hi", "p_controls", "lost", "gained", "p_mcnemar"),
    *("retention_own", "retention_controls"),
)


def _judge(rows: list[dict[str, Any]], ctx: _Study, baseline_rule: bool = False) -> None:
    """Holm over one family of rows (one split or language across relations), then each
    row's verdict; in place. With `baseline_rule`, a row with fewer baseline-correct prompts
    than `claims.baseline_allows` needs is "not testable": its numbers are blanked and it
    leaves the family before Holm."""
    allows = claims.baseline_allows
    blank = {id(r) for r in rows if baseline_rule and not allows(r["retention_n"], ctx.rules)}
    for r in rows:
        if id(r) in blank:
            r.update(dict.fromkeys(UNTESTED_KEYS))
    p_ctrl = claims.holm([r["p_controls"] for r in rows])
    p_mcn = claims.holm([r["p_mcnemar"] for r in rows])
    for r, pc, pm in zip(rows, p_ctrl, p_mcn, strict=True):
        r["p_controls_holm"], r["p_mcnemar_holm"] = pc, pm
        low = r["relation"] in ctx.underpowered or r["n_subjects"] < ctx.rules.min_test_subjects
        r["verdict"] = (
            claims.NOT_TESTABLE
            if id(r) in blank
            else claims.verdict(pc, r["lost"] + r["gained"], low, ctx.rules)
        )


def _families(
    rows: list[dict[str, Any]], keys: tuple[str, ...], ctx: _Study, baseline_rule: bool = False
) -> list[dict[str, Any]]:
    """`_judge` over each family: the rows sharing the values of `keys`."""
    for value in sorted({tuple(r[k] for k in keys) for r in rows}):
        family = [r for r in rows if tuple(r[k] for k in keys) == value]
        _judge(family, ctx, baseline_rule)
    return rows


def _intra_rows(ctx: _Study) -> list[dict[str, Any]]:
    rows = []
    for rel in ctx.relations:
        frame = ctx.read(ctx.evals["intra"][rel])
        for split in ("identify", "test"):
            part = frame.filter(pl.col("split") == split)
            if part.height:
                rows.append({"relation": rel, "split": split, **controlled_row(part, ctx.rules)})
    return rows


def _underpowered(intra: list[dict[str, Any]], ctx: _Study) -> set[str]:
    """Relations whose evaluated test prompts hold fewer than min_test_subjects subjects."""
    test = {r["relation"]: r["n_subjects"] for r in intra if r["split"] == "test"}
    return {rel for rel in ctx.relations if test.get(rel, 0) < ctx.rules.min_test_subjects}


def _lingual_rows(ctx: _Study) -> list[dict[str, Any]]:
    rows = []
    for rel in ctx.relations:
        frames = [ctx.read(ctx.evals["intra"][rel]).filter(pl.col("split") == "test")]
        if rel in ctx.evals["cross_lingual"]:
            frames.append(ctx.read(ctx.evals["cross_lingual"][rel]))
        for frame in frames:
            for (lang,), part in sorted(frame.group_by("language")):
                c = controlled_row(part, ctx.rules)
                c["accuracy"], c["relative_drop"] = c["target"], _drop(c["baseline"], c["target"])
                rows.append({"relation": rel, "language": lang, **c})
    return _families(rows, ("language",), ctx, baseline_rule=True)


# --------------------------------------------------------------- per-language neuron sets


def _lingual_frames(ctx: _Study, rel: str) -> dict[str, list[pl.DataFrame]]:
    """{language of the set: its eval frames} of one relation: the identification
    language's set (`study-<relation>`) through its intra test rows and cross-lingual eval,
    every other language's set through its `language_ablation` eval."""
    own = [ctx.read(ctx.evals["intra"][rel]).filter(pl.col("split") == "test")]
    if rel in ctx.evals["cross_lingual"]:
        own.append(ctx.read(ctx.evals["cross_lingual"][rel]))
    sets = ctx.evals.get("language_ablation", {}).get(rel, {})
    out = {ctx.st["identify_language"]: own}
    for lang, path in sets.items():
        out[lang] = [ctx.read(path).filter(pl.col("split") == "test")]
    return out


def _language_ablation_rows(ctx: _Study) -> list[dict[str, Any]]:
    """Each relation's per-language sets off (`set_language`), on its test prompts in each
    `language`: the own-vs-random row of every cell, for the relations that have a set in a
    language other than the identification one. Holm per (set_language, language) family
    over the relations; a cell whose baseline leaves too little to lose is "not testable"."""
    rows = []
    for rel in ctx.relations:
        if not ctx.evals.get("language_ablation", {}).get(rel):
            continue
        for set_lang, frames in _lingual_frames(ctx, rel).items():
            for frame in frames:
                for (lang,), part in sorted(frame.group_by("language")):
                    c = controlled_row(part, ctx.rules)
                    c["accuracy"] = c["target"]
                    c["relative_drop"] = _drop(c["baseline"], c["target"])
                    rows.append({"relation": rel, "set_language": set_lang, "language": lang, **c})
    return _families(rows, ("set_language", "language"), ctx, baseline_rule=True)


def _neurons(ctx: _Study, name: str) -> tuple[set[int], dict[int, int]]:
    frame = _read(ctx.root, f"{SELECTIONS_DIR}/{name}.parquet", ["neuron_id"])
    return set(frame["neuron_id"].to_list()), _per_layer(ctx.root, name)[0]


def _language_overlap_rows(ctx: _Study) -> list[dict[str, Any]]:
    """Per relation and language with a set: the neurons it shares with the identification
    language's set, beside what chance gives; exact one-sided hypergeometric test against
    sets drawn uniformly from the site's `population` neurons, Holm over every row."""
    sets, counts = ctx.st.get("language_sets") or {}, ctx.st.get("language_counts") or {}
    population = ctx.st["units_total"]
    rows = []
    for rel in [r for r in ctx.relations if r in sets]:
        ref, ref_layers = _neurons(ctx, ctx.st["selections"][rel]["top"])
        units = _per_layer(ctx.root, ctx.st["selections"][rel]["top"])[1]
        for lang, name in sets[rel].items():
            other, layers = _neurons(ctx, name)
            shared, (a, b) = len(ref & other), (len(ref), len(other))
            n = counts.get(lang, {}).get(rel, {})
            rows.append(
                {
                    "relation": rel,
                    "language": lang,
                    "selection": name,
                    "size_a": a,
                    "size_b": b,
                    "population": population,
                    "shared": shared,
                    "jaccard": shared / len(ref | other) if ref | other else None,
                    "expected": a * b / population,
                    "expected_layers": expected_overlap(ref_layers, layers, units)
                    if units and ref_layers and layers
                    else None,
                    "p": claims.hypergeom_sf(shared, population, a, b),
                    "n": n.get("prompts"),
                    "n_subjects": n.get("subjects"),
                    "n_reference": ctx.st.get("identify_correct", {}).get(rel),
                    "n_reference_subjects": ctx.st.get("identify_subjects", {}).get(rel),
                }
            )
    for r, p in zip(rows, claims.holm([r["p"] for r in rows]), strict=True):
        r["p_holm"], r["verdict"] = p, claims.overlap_verdict(p, ctx.rules)
    return rows


def _template_rows(ctx: _Study) -> list[dict[str, Any]]:
    """Held-out-template evals: test prompts whose template selection never saw."""
    split = ctx.st.get("template_split", {})
    rows = []
    for rel, path in sorted(ctx.evals.get("templates", {}).items()):
        part = ctx.read(path).filter(pl.col("split") == "test")
        if part.height:
            row = {"relation": rel, "split": "test", **controlled_row(part, ctx.rules)}
            row["select_templates"] = split.get(rel, {}).get("select", [])
            row["test_templates"] = split.get(rel, {}).get("test", [])
            rows.append(row)
    _judge(rows, ctx)
    return rows


# ---------------------------------------------------------------------- cross-relation


def _cross_rows(ctx: _Study) -> list[dict[str, Any]]:
    """Every (target ri, ablated rj) cell: accuracy of ri's test prompts with rj's set off,
    McNemar each way against their baseline answers; interference = gains that survive Holm
    over the off-diagonal cells, with enough gained prompts and a target that is not
    underpowered."""
    cells = []
    for rj in ctx.relations:
        frame = _targets(ctx.read(ctx.evals["cross_relation"][rj]))
        for ri in ctx.relations:
            part = frame.filter(pl.col("relation") == ri)
            b, a = _mean(part["baseline_correct"]), _mean(part["correct"])
            lost, gained = claims.discordant(part["baseline_correct"], part["correct"])
            cells.append(
                {
                    "target": ri,
                    "ablated": rj,
                    "n": part.height,
                    "n_subjects": part["subject"].n_unique(),
                    "baseline": b,
                    "accuracy": a,
                    "relative_drop": _drop(b, a),
                    "gain": None if a is None or b is None else a - b,
                    "lost": lost,
                    "gained": gained,
                    "p_loss": claims.mcnemar_p(lost, gained),
                    "p_gain": claims.mcnemar_p(gained, lost),
                    "p_gain_holm": None,
                    "interference": False,
                }
            )
    off = [c for c in cells if c["target"] != c["ablated"]]
    for c, p in zip(off, claims.holm([c["p_gain"] for c in off]), strict=True):
        c["p_gain_holm"] = p
        c["interference"] = claims.mcnemar_holds(p, c["gained"], ctx.rules) and (
            c["target"] not in ctx.underpowered
        )
    return cells


# ------------------------------------------------------------------- sweep, cumulativity


def _sweep_side(frame: pl.DataFrame | None, count: int, first: int, rules: Rules) -> dict:
    """Accuracy of one sweep curve at `count` (0 = the baseline answers of the same prompts)
    under key "", its prompts "_n", subjects "_subjects" and subject-cluster bootstrap
    interval "_lo", "_hi" (suffixes of the row's "own"/"others" keys)."""
    if frame is None:
        return {"": None, "_n": 0, "_subjects": 0, "_lo": None, "_hi": None}
    if count == 0:
        part = frame.filter(pl.col("count") == first)
        values = part["baseline_correct"]
    else:
        part = frame.filter(pl.col("count") == count)
        values = part["correct"]
    v = values.cast(pl.Float64).to_numpy()
    lo, hi = claims.cluster_bootstrap(
        v, part["subject"].to_list(), resamples=rules.bootstrap, seed=rules.seed
    )
    subjects = part["subject"].n_unique()
    return {"": _mean(values), "_n": part.height, "_subjects": subjects, "_lo": lo, "_hi": hi}


def _sweep_rows(ctx: _Study) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sweep, cumulativity = [], []
    first = ctx.st["sweep"][0]
    for rel in ctx.relations:
        own = _targets(ctx.read(ctx.evals["sweep_own"][rel]))
        others_file = ctx.evals["sweep_others"].get(rel)
        others = _targets(ctx.read(others_file)) if others_file else None
        for count in [0, *ctx.st["sweep"]]:
            row: dict[str, Any] = {"relation": rel, "count": count}
            for label, frame in (("own", own), ("others", others)):
                side = _sweep_side(frame, count, first, ctx.rules)
                row.update({label + k: v for k, v in side.items()})
            sweep.append(row)
        cumulativity += _cumulativity(ctx.root, rel, own, ctx.evals["ranges"].get(rel, {}))
    return sweep, cumulativity


def _cumulativity(
    root: Location, rel: str, own: pl.DataFrame, range_files: dict[str, str]
) -> list[dict[str, Any]]:
    """For each range a-b: total = prompts right with the top-a off and wrong with the top-b
    off; affected = those of them wrong with only ranks a+1..b off; score = 1 - affected/total
    (null when total is 0)."""
    out = []
    right = own.select("prompt_id", "count", "correct")
    base = own.filter(pl.col("count") == own["count"].min()).select(
        "prompt_id", pl.col("baseline_correct").alias("correct")
    )
    by_range = sorted(
        (tuple(int(x) for x in label.split("-")), p) for label, p in range_files.items()
    )
    for (a, b), path in by_range:
        at_a = right.filter(pl.col("count") == a).select("prompt_id", "correct") if a else base
        at_b = right.filter(pl.col("count") == b).select("prompt_id", "correct")
        rng = _targets(_read(root, path)).select("prompt_id", "correct")
        both = (
            at_a.rename({"correct": "a"})
            .join(at_b.rename({"correct": "b"}), on="prompt_id")
            .filter(pl.col("a") & ~pl.col("b"))
            .join(rng.rename({"correct": "r"}), on="prompt_id", how="left")
        )
        total = both.height
        affected = int((~both["r"].fill_null(False)).sum()) if total else 0
        out.append(
            {
                "relation": rel,
                "a": a,
                "b": b,
                "total": total,
                "affected": affected,
                "score": (1 - affected / total) if total else None,
            }
        )
    return out


# ------------------------------------------------------------------- overlap and layers


def _per_layer(root: Location, name: str) -> tuple[dict[int, int], int | None]:
    """A selection's neurons per layer (every captured layer, zeros included) and the units
    per layer, from its sidecar; ({}, None) for a sidecar without them."""
    side = f"{SELECTIONS_DIR}/{name}.json"
    meta = root.read_json(side) if root.isfile(side) else {}
    per_layer = {int(k): int(v) for k, v in (meta.get("per_layer") or {}).items()}
    return per_layer, meta.get("units")


def expected_overlap(a: dict[int, int], b: dict[int, int], units: int) -> float:
    """Expected shared neurons of two random sets with a's and b's counts in every layer:
    sum over layers of a_l · b_l / units."""
    return float(sum(a[layer] * b.get(layer, 0) for layer in a) / units)


def _overlap_layers(ctx: _Study) -> tuple[list[dict], list[dict], int | None]:
    sets, shapes, layers = {}, {}, []
    units = None
    for rel in ctx.relations:
        name = ctx.st["selections"][rel]["top"]
        frame = _read(ctx.root, f"{SELECTIONS_DIR}/{name}.parquet")
        sets[rel] = set(frame["neuron_id"].to_list())
        shapes[rel], units = _per_layer(ctx.root, name)
        n_layers = len(shapes[rel]) or frame["layer"].n_unique()
        counts = frame.group_by("layer").len().sort("layer")
        layers += [
            {"relation": rel, "layer": int(layer), "count": int(n)}
            | {"uniform": len(sets[rel]) / n_layers}
            for layer, n in counts.iter_rows()
        ]
    overlap = []
    for a in ctx.relations:
        for b in ctx.relations:
            shared, union = len(sets[a] & sets[b]), len(sets[a] | sets[b])
            known = units and shapes[a] and shapes[b]
            overlap.append(
                {
                    "a": a,
                    "b": b,
                    "size_a": len(sets[a]),
                    "size_b": len(sets[b]),
                    "shared": shared,
                    "jaccard": shared / union if union else None,
                    "expected": expected_overlap(shapes[a], shapes[b], units) if known else None,
                }
            )
    return overlap, layers, units


# ------------------------------------------------------------------ specificity, errors


def _specificity(ctx: _Study) -> list[dict[str, Any]]:
    """Perplexity of neutral text with each relation's set off, and (when the study computed
    them) with random sets of the same per-layer counts (`control_seed` rows)."""
    if not ctx.st.get("perplexity"):
        return []
    ppl = _read(ctx.root, ctx.st["perplexity"])
    if "control_seed" not in ppl.columns:
        ppl = ppl.with_columns(control_seed=pl.lit(None, dtype=pl.Int64))
    out = []
    for r in _targets(ppl).iter_rows(named=True):
        ctrl = _control_rows(ppl).filter(pl.col("relation") == r["relation"])["ppl_ablated"]
        out.append(
            {
                "relation": r["relation"],
                "ppl_baseline": r["ppl_baseline"],
                "ppl_ablated": r["ppl_ablated"],
                "ratio": r["ppl_ablated"] / r["ppl_baseline"],
                "ppl_controls": float(ctrl.mean()) if ctrl.len() else None,  # type: ignore[arg-type]
                "ppl_controls_lo": float(ctrl.min()) if ctrl.len() else None,  # type: ignore[arg-type]
                "ppl_controls_hi": float(ctrl.max()) if ctrl.len() else None,  # type: ignore[arg-type]
                "ppl_controls_n": ctrl.len(),
            }
        )
    return out


def _top_answers(rel: str, condition: str, generated: pl.Series) -> list[dict[str, Any]]:
    answers = pl.Series("answer", [normalize_answer(g or "") for g in generated], pl.Utf8)
    counts = answers.value_counts(name="count").sort(["count", "answer"], descending=[True, False])
    return [
        {"relation": rel, "condition": condition, "answer": a, "count": int(n)}
        | {"share": n / answers.len()}
        for a, n in counts.head(TOP_ANSWERS).iter_rows()
    ]


def _errors(ctx: _Study, base: pl.DataFrame) -> list[dict[str, Any]]:
    """The most frequent (normalised) answers per relation on its evaluated test prompts:
    baseline, own set off, random sets (all sets pooled) — the paper's Table 4."""
    out = []
    for rel in ctx.relations:
        frame = ctx.read(ctx.evals["intra"][rel]).filter(pl.col("split") == "test")
        own = _targets(frame)
        before = base.filter(pl.col("prompt_id").is_in(own["prompt_id"].to_list()))
        for condition, part in (
            ("baseline", before),
            ("own", own),
            ("controls", _control_rows(frame)),
        ):
            if part.height:
                out += _top_answers(rel, condition, part["generated"])
    return out


# ------------------------------------------------------------------------------ summary


def _skipped(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{relation: {prompts, subjects, why}}; an older study's {relation: why} reads as
    {prompts: null, subjects: null, why}."""
    out = {}
    for rel, v in (st.get("skipped") or {}).items():
        v = v if isinstance(v, dict) else {"why": str(v)}
        out[rel] = {"prompts": v.get("prompts"), "subjects": v.get("subjects"), "why": v["why"]}
    return out


def _study_info(ctx: _Study, units: int | None) -> dict[str, Any]:
    st, rules = ctx.st, ctx.rules
    return {
        "model": st["model"],
        "weights_hash": st["weights_hash"],
        "site": st["site"],
        "units_total": st["units_total"],
        "units": units,
        "top_k": st["top_k"],
        "sweep": st["sweep"],
        "ranges": st["ranges"],
        "controls": st["config"]["controls"],
        "sample": st["config"]["sample"],
        "others_sample": st["config"]["others_sample"],
        "identify_language": st["identify_language"],
        "languages": st["languages"],
        "relations": ctx.relations,
        "skipped": _skipped(st),
        "identify_correct": st.get("identify_correct", {}),
        "identify_subjects": st.get("identify_subjects", {}),
        "negatives": st["negatives"],
        "warehouse": str(ctx.root),
        "seconds": st.get("seconds", {}),
        "alpha": rules.alpha,
        "min_discordant": rules.min_discordant,
        "min_test_subjects": rules.min_test_subjects,
        "permutations": rules.permutations,
        "bootstrap": rules.bootstrap,
        "tests": claims.TESTS,
        "underpowered": sorted(ctx.underpowered),
        "language_sets": st.get("language_sets") or {},
        "language_skipped": st.get("language_skipped") or {},
    }


def _baseline_rows(base: pl.DataFrame) -> list[dict[str, Any]]:
    return (
        base.group_by("relation", "language", "split")
        .agg(
            n=pl.len(),
            n_subjects=pl.col("subject").n_unique(),
            accuracy=pl.col("correct").cast(pl.Float64).mean(),
        )
        .sort("relation", "language", "split")
        .to_dicts()
    )


def _open(where: str | Path | Location) -> tuple[Location, dict[str, Any]]:
    root = Location.of(where)
    if not root.isfile(STUDY_FILE):
        raise FormatError(f"{root} holds no finished study ({STUDY_FILE}): run `warehouse study`")
    st = root.read_json(STUDY_FILE)
    if "evals" not in st:
        raise FormatError(f"{root / STUDY_FILE}: the study has not finished; re-run it")
    return root, st


def compute(where: str | Path | Location, rules: Rules | None = None) -> dict[str, Any]:
    """The summary of the study stored in a warehouse: a folder, a .zip file or an fsspec
    URL, read-only (module docstring)."""
    root, st = _open(where)
    ctx = _Study(root, st, rules or Rules(), _subjects(root))
    intra = _intra_rows(ctx)
    ctx.underpowered = _underpowered(intra, ctx)
    _families(intra, ("split",), ctx)
    base = ctx.read(BASELINE_FILE)
    cross = _cross_rows(ctx)
    sweep, cumulativity = _sweep_rows(ctx)
    overlap, layers, units = _overlap_layers(ctx)
    summary = {
        "study": _study_info(ctx, units),
        "baseline": _baseline_rows(base),
        "intra": intra,
        "templates": _template_rows(ctx),
        "sweep": sweep,
        "cumulativity": cumulativity,
        "overlap": overlap,
        "cross_relation": cross,
        "cross_lingual": _lingual_rows(ctx),
        "language_overlap": _language_overlap_rows(ctx),
        "language_ablation": _language_ablation_rows(ctx),
        "interference": [c for c in cross if c["interference"]],
        "specificity": _specificity(ctx),
        "layers": layers,
        "errors": _errors(ctx, base),
    }
    summary["headline"] = headline(summary)
    return summary


# ------------------------------------------------------------------------------ headline


def _avg(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def _count(rows: list[dict[str, Any]], hit: Callable[[dict[str, Any]], bool]) -> int:
    return sum(1 for r in rows if hit(r))


SPLIT_ORDER = ("test", "identify")  # the headline speaks of held-out facts when it can
# What `headline` reads, per section (a missing section is an empty one).
HEADLINE_NEEDS: dict[str, tuple[str, ...]] = {
    "study": ("alpha", "min_discordant", "min_test_subjects", "underpowered", "identify_language"),
    "intra": (
        *("relation", "split", "baseline", "target", "control_mean"),
        *("lost", "p_mcnemar_holm", "verdict"),
    ),
    "templates": ("relation", "verdict"),
    "cross_lingual": ("relation", "language", "verdict", "n", "n_subjects"),
    "cross_relation": ("target", "ablated", "relative_drop", "interference"),
    "language_overlap": ("relation", "language", "verdict", "n", "n_subjects"),
    "language_ablation": ("relation", "set_language", "language", "verdict", "n", "n_subjects"),
}
# Every key of a headline of this version (a summary's headline lacking one is recomputed).
HEADLINE_KEYS = frozenset(
    "own_baseline own_ablated own_controls own_relative_drop others_ablated_drop split "
    "evaluated relations underpowered beyond_controls own_losses templates_beyond "
    "templates_relations languages interference_cells cross_cells test loss_test "
    "interference_test alpha min_discordant min_test_subjects language_overlap "
    "language_ablation overlap_test".split()
)


def headline_split(intra: list[dict[str, Any]]) -> str | None:
    """The intra split the headline speaks of: test (held-out facts) when present."""
    present = {r["split"] for r in intra}
    return next((s for s in SPLIT_ORDER if s in present), None)


def _section(summary: dict[str, Any], name: str) -> Any:
    """summary[name] (study: a dict, else a list of records) with the keys `headline`
    reads; FormatError naming the first one missing."""
    value = summary.get(name, {} if name == "study" else [])
    records = [value] if name == "study" else value
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise FormatError(f"summary[{name!r}] is not what the findings module writes")
    for i, r in enumerate(records):
        missing = [k for k in HEADLINE_NEEDS[name] if k not in r]
        if missing:
            where = f"summary[{name!r}]" + ("" if name == "study" else f"[{i}]")
            raise FormatError(f"{where} lacks {', '.join(missing)}: no headline counts")
    return value


def _tested(rows: list[dict[str, Any]], under: set[str]) -> list[dict[str, Any]]:
    """Rows with a test verdict whose relation is not underpowered."""
    return [r for r in rows if r["verdict"] in claims.TESTED and r["relation"] not in under]


def _tally(rows: list[dict[str, Any]], under: set[str]) -> dict[str, int]:
    """How many rows were tested, and how many of them are beyond controls."""
    tested = _tested(rows, under)
    return {
        "beyond_controls": _count(tested, lambda r: r["verdict"] == claims.BEYOND),
        "relations": len(tested),
    }


def ordered(preferred: Iterable[Any], seen: Iterable[Any]) -> list[Any]:
    """`preferred` order first (the study's), then anything else the data holds, sorted."""
    pref = list(dict.fromkeys(preferred))
    present = set(seen)
    extra = sorted(present - set(pref), key=lambda s: (str(type(s)), s))
    return [p for p in pref if p in present] + extra


def _cell_tally(rows: list[dict[str, Any]], under: set[str]) -> dict[str, int]:
    """`_tally` of language cells, with the prompts (`n`) and distinct subjects
    (`n_subjects`) of the tested cells summed beside it, and the cells whose baseline left
    too little to lose counted apart (`not_testable`), never as negatives."""
    return {
        **_tally(rows, under),
        "not_testable": _count(rows, lambda r: r["verdict"] == claims.NOT_TESTABLE),
        **_n_sums(_tested(rows, under)),
    }


def _n_sums(rows: list[dict[str, Any]]) -> dict[str, int]:
    """The prompts (`n`) and distinct subjects (`n_subjects`) of cells, summed."""
    return {k: sum(int(r[k] or 0) for r in rows) for k in ("n", "n_subjects")}


def _language_order(summary: dict[str, Any], seen: Iterable[str]) -> list[str]:
    """The languages of `seen` but the identify one, in the study's language order."""
    s = summary["study"]
    return ordered(s.get("languages") or [], set(seen) - {s["identify_language"]})


def _languages(summary: dict[str, Any], under: set[str]) -> dict[str, dict[str, int]]:
    """{language: cell tally} of the cross-lingual rows of every language but the identify
    one, in the study's language order."""
    rows = _section(summary, "cross_lingual")
    order = _language_order(summary, (r["language"] for r in rows))
    return {x: _cell_tally([r for r in rows if r["language"] == x], under) for x in order}


def _language_overlap(summary: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{language: {beyond_chance, cells, n, n_subjects}}: of the cells (relations) whose
    language has a set, how many share more neurons with the identify language's set than
    chance (hypergeometric test, Holm over every cell); n and n_subjects are the correct
    identification prompts and their subjects the sets were found on, summed over the
    cells."""
    rows = _section(summary, "language_overlap")
    out = {}
    for lang in _language_order(summary, (r["language"] for r in rows)):
        cells = [r for r in rows if r["language"] == lang]
        out[lang] = {
            "beyond_chance": _count(cells, lambda r: r["verdict"] == claims.BEYOND_CHANCE),
            "cells": len(cells),
            **_n_sums(cells),
        }
    return out


def _language_ablation(
    summary: dict[str, Any], under: set[str]
) -> dict[str, dict[str, dict[str, int]]]:
    """{language of the set: {language of the prompts: cell tally}} of the per-language
    sets of every language but the identify one (whose cells are `languages` and the own
    relation's counts)."""
    rows = _section(summary, "language_ablation")
    out = {}
    for found in _language_order(summary, (r["set_language"] for r in rows)):
        of_set = [r for r in rows if r["set_language"] == found]
        langs = ordered(summary["study"].get("languages") or [], (r["language"] for r in of_set))
        out[found] = {
            x: _cell_tally([r for r in of_set if r["language"] == x], under) for x in langs
        }
    return out


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """Every count the study states, each from a test (the one place they are made):
    relations beyond controls and relations whose own set loses answers (McNemar), on the
    test split when present (`split`); held-out templates; each language but the identify
    one; the per-language sets' overlap with the identification set and their ablation
    cells (n and n_subjects of the tested cells beside each, "not testable" cells apart);
    interference cells. Every count leaves out the underpowered relations
    (`study.underpowered`); `relations` is how many remain. Beside them, means over relations
    of the split's intra numbers and of the cross-relation drops (descriptive, no claim).
    FormatError when the summary lacks a key it needs (`HEADLINE_NEEDS`)."""
    s = _section(summary, "study")
    rules = Rules(
        alpha=s["alpha"],
        min_discordant=s["min_discordant"],
        min_test_subjects=s["min_test_subjects"],
    )
    under = set(s["underpowered"])
    intra = _section(summary, "intra")
    split = headline_split(intra)
    rows = [r for r in intra if r["split"] == split]
    own = _tally(rows, under)
    cross = _section(summary, "cross_relation")
    diagonal = [c for c in cross if c["target"] == c["ablated"]]
    off = [c for c in cross if c["target"] != c["ablated"]]
    judged = [c for c in off if c["target"] not in under]
    templates = _tally(_section(summary, "templates"), under)
    return {
        "own_baseline": _avg([r["baseline"] for r in rows]),
        "own_ablated": _avg([r["target"] for r in rows]),
        "own_controls": _avg([r["control_mean"] for r in rows]),
        "own_relative_drop": _avg([c["relative_drop"] for c in diagonal]),
        "others_ablated_drop": _avg([c["relative_drop"] for c in off]),
        "split": split,
        "evaluated": len(rows),
        "relations": own["relations"],
        "underpowered": list(s["underpowered"]),
        "beyond_controls": own["beyond_controls"],
        "own_losses": _count(
            _tested(rows, under),
            lambda r: claims.mcnemar_holds(r["p_mcnemar_holm"], r["lost"], rules),
        ),
        "templates_beyond": templates["beyond_controls"],
        "templates_relations": templates["relations"],
        "languages": _languages(summary, under),
        "language_overlap": _language_overlap(summary),
        "language_ablation": _language_ablation(summary, under),
        "interference_cells": _count(judged, lambda c: c["interference"] is True),
        "cross_cells": len(judged),
        "test": "one-sided sign-flip permutation test over subjects, own set vs random sets, "
        "Holm over relations",
        "loss_test": "exact one-sided McNemar test, own set off vs baseline, Holm over relations",
        "interference_test": "exact one-sided McNemar test of gains, Holm over the "
        "off-diagonal cells",
        "overlap_test": "exact one-sided hypergeometric test against random sets of the "
        "site's neurons, Holm over every cell",
        "alpha": rules.alpha,
        "min_discordant": rules.min_discordant,
        "min_test_subjects": rules.min_test_subjects,
    }


def _count_lines(h: dict[str, Any]) -> list[str]:
    """The headline's counts, one line each with its test (held-out templates and languages
    only where something was tested)."""
    rule = f"alpha {h['alpha']}, >= {h['min_discordant']} discordant prompts"
    lines = [
        f"beyond controls: {h['beyond_controls']} of {h['relations']} relations "
        f"({h['test']}; {rule})",
        f"own neurons off lose answers: {h['own_losses']} of {h['relations']} relations "
        f"({h['loss_test']}; alpha {h['alpha']}, >= {h['min_discordant']} prompts lost)",
    ]
    if h["templates_relations"]:
        lines.append(
            f"held-out templates, beyond controls: {h['templates_beyond']} of "
            f"{h['templates_relations']} relations (same test; {rule})"
        )
    lines += [
        _cell_line(f"in {lang}", t, f"same test; {rule}", h["min_discordant"])
        for lang, t in h["languages"].items()
    ]
    lines += _language_lines(h, rule)
    lines.append(
        f"interference: {h['interference_cells']} of {h['cross_cells']} cells "
        f"({h['interference_test']}; alpha {h['alpha']}, >= {h['min_discordant']} prompts "
        "gained; underpowered targets left out)"
    )
    return [line for line in lines if line]


def _n(t: dict[str, Any]) -> str:
    return f"n = {t['n']} prompts, {t['n_subjects']} subjects"


def _cell_line(scope: str, t: dict[str, Any], test: str, min_discordant: int) -> str:
    """One language cell tally: k of n tested relations beyond controls with their prompts
    and subjects, then the not-testable cells apart; "" when there is neither."""
    parts = []
    if t["relations"]:
        parts.append(
            f"{scope}, beyond controls: {t['beyond_controls']} of {t['relations']} relations, "
            f"{_n(t)} ({test})"
        )
    if t.get("not_testable"):
        parts.append(
            f"{scope}, not testable (< {min_discordant} baseline-correct prompts, no verdict): "
            f"{t['not_testable']} relation{'' if t['not_testable'] == 1 else 's'}"
        )
    return "; ".join(parts)


def _language_lines(h: dict[str, Any], rule: str) -> list[str]:
    """The per-language sets' counts: overlap with the identify language's set per
    language, then each set's ablation per language of the prompts."""
    lines = [
        f"{lang} set shares more neurons with the identification set than chance: "
        f"{t['beyond_chance']} of {t['cells']} relations, {_n(t)} ({h['overlap_test']}; "
        f"alpha {h['alpha']})"
        for lang, t in h["language_overlap"].items()
        if t["cells"]
    ]
    lines += [
        _cell_line(f"{found} set off, {lang} prompts", t, f"same test; {rule}", h["min_discordant"])
        for found, by_lang in h["language_ablation"].items()
        for lang, t in by_lang.items()
    ]
    return lines


def format_headline(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: the study's headline (`summary["headline"]`), each
    count with its test."""
    h, s = summary["headline"], summary["study"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f} %"

    lines = [
        f"{s['model']} · site {s['site']} · top {s['top_k']} of {s['units_total']} neurons "
        f"per relation · {len(s['relations'])} relations · controls {s['controls']}",
        f"own relation ({h['split']}, {s['identify_language']}), mean over {h['evaluated']} "
        f"relations: baseline {pct(h['own_baseline'])}, own neurons off "
        f"{pct(h['own_ablated'])}, random controls {pct(h['own_controls'])}",
        *_count_lines(h),
        f"mean relative drop: own relation {pct(h['own_relative_drop'])}, other relations "
        f"{pct(h['others_ablated_drop'])}",
    ]
    if h["underpowered"]:
        lines.append(
            f"underpowered (< {h['min_test_subjects']} test subjects, no verdict): "
            + ", ".join(h["underpowered"])
        )
    return "\n".join(lines)
