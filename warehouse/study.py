"""`warehouse study`: the paper's whole pipeline on one warehouse, resumable stage by stage.

Stages, each a call of the stage's own library function, each reusing its output when its
inputs are unchanged (so a killed or repeated study continues where it stopped):

1. ingest     pooled mean responses of every prompt (`ingest.run.ingest`; resumes itself).
2. baseline   greedy answers of every prompt (`evals/baseline.parquet`), needed to keep only
              correctly answered identification prompts.
3. stats      AP of every neuron per relation and language, on identification prompts the
              model answers correctly, negatives 4x the positives (the paper's setting).
              A relation needs `min_correct` such prompts from `min_subjects` subjects in
              `identify_language`; the others are named in `skipped` and studied no further.
4. select     per relation, the top-k neurons by rank on `identify_language` prompts
              (`study-<relation>`), the top max(sweep) for the sweep (`study-<relation>-sweep`)
              and the rank ranges a+1..b of the cumulativity check
              (`study-<relation>-ranks-<a>-<b>`).
   language sets  per relation and every other language with the minimums above in that
              language, its top-k on that language's prompts (`study-<relation>-lang-<L>`);
              nothing in a one-language study.
5. eval       `run_eval` requests per relation (each cached in `evals/` by its options):
              intra (own relation, both splits, with controls), sweep (own relation and a
              few prompts of every other relation), cross-relation (every relation's test
              prompts), cross-lingual (own relation in the other languages, with controls),
              ranges (own relation, each rank range alone).
   language ablation  each per-language set off, with controls, on its relation's test
              prompts in every language.
   templates  for a relation with >= 2 templates in `identify_language`: a seeded half of
              them is held out, the top-k is found on stats of the other templates' prompts
              only (`study-<relation>-templates`), and evaluated on test prompts of the
              held-out templates with the intra condition's controls.
6. perplexity relation-neutral sentences with each relation's top-k off
              (`study/perplexity.parquet`).

`study/study.json` records the configuration, which file holds each part and the seconds
each stage took; `analysis.findings` turns those tables into the numbers of the report.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from warehouse.store.errors import WarehouseError
from warehouse.store.format import PERPLEXITY_FILE, PERPLEXITY_SCHEMA, PROMPTS_FILE, STUDY_FILE

if TYPE_CHECKING:
    from warehouse.store.fingerprint import CacheKey

PAPER_UNITS = 835_584  # gate + up + down outputs of Llama-2-7B's 32 layers, the paper's count
PAPER_TOP_K = 3_000
PAPER_SWEEP = (10, 50, 200, 500, 1_000, 3_000, 10_000, 20_000, 50_000)


@dataclass
class StudyConfig:
    """Options of `warehouse study` (see the module docstring)."""

    out: Path
    model: str = "smollm2-135m"
    dataset: str | None = None  # None: the built-in dataset
    relations: list[str] | None = None  # None: all of the dataset's
    languages: list[str] | None = None  # None: all of the dataset's
    identify_language: str = "en"  # neurons are found on this language's prompts
    site: str = "ffn.act"
    top_k: int | None = None  # None: the paper's 3,000 of 835,584, scaled to the site
    sweep: list[int] | None = None  # None: the paper's counts, scaled to the site
    controls: int = 10  # random sets per controlled condition (the paper averages 10)
    sample: int | None = None  # eval prompts per relation x language x split (None: all)
    others_sample: int = 3  # per other relation, for the sweep's "other relations" curve
    batch_size: int = 32
    stack_rows: int = 256  # rows of one eval forward pass (EvalConfig.stack_rows)
    shared_prefix: bool = True  # evals run shared leading tokens once (EvalConfig's)
    device: str = "cpu"
    model_dtype: str = "float32"
    max_new_tokens: int = 2
    seed: int = 0
    # A relation needs this many correctly answered identification prompts (in
    # identify_language) from this many distinct subjects; with fewer, hundreds of neurons
    # reach AP = 1 and the ranking rests on a handful of facts.
    min_correct: int = 20
    min_subjects: int = 10
    sentences: str | None = None  # perplexity text file; None: the built-in neutral set
    # Ray: ingest and every eval request run as `shards` Ray tasks ("local", "auto" or an
    # address; warehouse.scale). None: everything in this process.
    ray: str | None = None
    shards: int | None = None
    show_progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # recorded as given (e.g. "demo")


def scaled(count: int, units_total: int) -> int:
    """The paper's neuron count for Llama-2-7B, scaled to a site of `units_total` units."""
    return max(1, round(count * units_total / PAPER_UNITS))


def plan_counts(cfg: StudyConfig, units_total: int) -> tuple[int, list[int]]:
    """(top_k, sweep) for a site of `units_total` units: given, or the paper's scaled."""
    top_k = cfg.top_k if cfg.top_k is not None else scaled(PAPER_TOP_K, units_total)
    sweep = cfg.sweep if cfg.sweep is not None else [scaled(c, units_total) for c in PAPER_SWEEP]
    sweep = sorted(set(sweep))
    if not 1 <= top_k <= units_total:
        raise WarehouseError(f"--top-k must lie in 1..{units_total}, got {top_k}")
    if not sweep or sweep[0] < 1 or sweep[-1] > units_total:
        raise WarehouseError(f"--sweep counts must lie in 1..{units_total}, got {cfg.sweep}")
    return top_k, sweep


def ranges(sweep: list[int]) -> list[tuple[int, int]]:
    """The cumulativity ranges: consecutive counts of the sweep."""
    return list(zip(sweep[:-1], sweep[1:], strict=True))


def selections_key(
    stats_file: Path,
    site: str,
    negatives: str,
    language: str,
    top_k: int,
    sweep: list[int] | None = None,
) -> CacheKey:
    """The cache key of the study's selections (its plan): derived from the stats file they
    are taken from, with what picks them; study.json records it, and a study whose key
    changed makes them anew."""
    from warehouse.store.fingerprint import CacheKey, result_fingerprint

    options = {"site": site, "negatives": negatives, "language": language, "top_k": top_k}
    if sweep is not None:
        options["sweep"] = sweep
    return CacheKey(result_fingerprint(stats_file), "study-plan", options)


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def stage(self, name: str, t0: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 2)


def _say(cfg: StudyConfig, text: str, always: bool = False) -> None:
    """A line on stderr: progress only with show_progress, notices (`always`) in any case."""
    if cfg.show_progress or always:
        from warehouse.store.progress import note

        note(f"[bold]study[/bold] {text}")


def run_study(cfg: StudyConfig) -> Path:
    """Run (or resume) every stage; returns the path of study/study.json."""
    _check(cfg)
    study = _Study(cfg)
    with study.progress:
        study.ingest()
        study.baseline()
        study.stats()
        study.select()
        study.language_sets()
        study.ablations()
        study.language_ablations()
        study.templates()
        study.perplexity()
    return study.record()


def _check(cfg: StudyConfig) -> None:
    if cfg.controls < 0:
        raise WarehouseError("--controls must be 0 or more")
    if cfg.sample is not None and cfg.sample < 1:
        raise WarehouseError(f"--sample must be at least 1, got {cfg.sample}")
    if cfg.shards is not None and cfg.ray is None:
        raise WarehouseError("--shards goes with --ray")
    if cfg.others_sample < 1:
        raise WarehouseError(f"--others-sample must be at least 1, got {cfg.others_sample}")
    if cfg.min_correct < 1 or cfg.min_subjects < 1:
        raise WarehouseError(
            f"--min-correct and --min-subjects must be at least 1, got {cfg.min_correct} "
            f"and {cfg.min_subjects}"
        )


EVAL_KINDS = (
    *("intra", "sweep_own", "sweep_others", "cross_relation", "cross_lingual", "ranges"),
    "language_ablation",
)
NEGATIVES = "ratio:4"  # the paper's negatives: 4x the positives, from other relations
# The overall progress line counts these steps: one per stage, one per eval request.
STAGE_STEPS = 5  # ingest, baseline, stats, select, perplexity


class _Study:
    """One run of the study: each method is one stage, and fills what later stages read."""

    def __init__(self, cfg: StudyConfig) -> None:
        from warehouse.scale import Placement
        from warehouse.store.progress import Progress

        self.cfg, self.root = cfg, Path(cfg.out)
        self.clock = _Clock()
        self.place = Placement(ray=cfg.ray, shards=cfg.shards)
        self.progress = Progress("study", STAGE_STEPS, enabled=cfg.show_progress, unit="steps")
        self.loaded: Any = None  # the model, loaded once after ingest for every eval here
        self.files: dict[str, Any] = {k: {} for k in EVAL_KINDS}

    def eval_config(self, **kw: Any) -> Any:
        """An EvalConfig of the study's common options and `kw`."""
        from warehouse.analysis.evaluate import EvalConfig

        cfg = self.cfg
        base = {
            "max_new_tokens": cfg.max_new_tokens,
            "batch_size": cfg.batch_size,
            "stack_rows": cfg.stack_rows,
            "shared_prefix": cfg.shared_prefix,
            "device": cfg.device,
            "seed": cfg.seed,
            "controls": 0,
        }
        return EvalConfig(**{**base, **kw})

    def evaluate(self, **kw: Any) -> Path:
        """One eval request of the study's common options and `kw`, where `place` says."""
        from warehouse.scale import dispatch

        ec = self.eval_config(**kw)
        path = dispatch(ec, self.place, root=self.root, show_progress=False, loaded=self.loaded)
        assert isinstance(path, Path)
        self.progress.advance(1)
        return path

    def run(self, selection: str, **kw: Any) -> str:
        return self.evaluate(selection=selection, **kw).relative_to(self.root).as_posix()

    def run_all(self, requests: list[tuple[tuple[str, ...], dict[str, Any]]]) -> None:
        """Eval requests ((where in `files`, options)), in this process together: the neuron
        sets of all requests on one prompt batch share its passes (`run_evals`); with Ray,
        one after another."""
        from warehouse.analysis.evaluate import run_evals

        if self.place.ray is not None:
            paths = [self.evaluate(**kw) for _, kw in requests]
        else:
            cfgs = [self.eval_config(**kw) for _, kw in requests]
            paths = run_evals(self.root, cfgs, show_progress=False, loaded=self.loaded)
            self.progress.advance(len(cfgs))
        for (where, _), path in zip(requests, paths, strict=True):
            *parents, last = where
            node = self.files
            for k in parents:
                node = node.setdefault(k, {})
            node[last] = path.relative_to(self.root).as_posix()

    def ingest(self) -> None:
        """1. pooled mean responses are all the statistics need."""
        from warehouse.ingest.models import load_model
        from warehouse.ingest.run import IngestConfig
        from warehouse.scale import dispatch
        from warehouse.store.manifest import Manifest, load_manifest

        cfg, t0 = self.cfg, time.perf_counter()
        _say(self.cfg, f"1/6 ingest -> {self.root}")
        icfg = IngestConfig(
            out=self.root,
            model=cfg.model,
            dataset=cfg.dataset,
            relations=cfg.relations,
            languages=cfg.languages,
            sites=cfg.site,
            capture="pooled",
            pooling=["mean"],
            batch_size=cfg.batch_size,
            device=cfg.device,
            model_dtype=cfg.model_dtype,
            seed=cfg.seed,
        )
        # One model for the whole study, ingest included: a second load costs its seconds
        # and a second set of packed weights (ingest/prepacked.py).
        self.loaded = load_model(cfg.model, dtype=cfg.model_dtype, device=cfg.device)
        manifest = dispatch(icfg, self.place, show_progress=cfg.show_progress, loaded=self.loaded)
        assert isinstance(manifest, Manifest)
        self.clock.stage("ingest", t0)
        sites = manifest.capture.sites
        if len(sites) != 1:
            raise WarehouseError(f"a study runs on one site; --site {cfg.site} gave {sites}")
        self.site = sites[0]
        self.units_total = manifest.model.units[self.site] * len(manifest.capture.layers)
        self.top_k, self.sweep = plan_counts(cfg, self.units_total)
        self.manifest = load_manifest(self.root)
        self._languages()
        self.progress.advance(1)

    def _languages(self) -> None:
        cfg = self.cfg
        self.prompts = _prompts(self.root)
        self.relations = sorted(self.prompts["relation"].unique().to_list())
        self.languages = sorted(self.prompts["language"].unique().to_list())
        if cfg.identify_language not in self.languages:
            raise WarehouseError(
                f"--identify-language {cfg.identify_language!r} is not among the warehouse's "
                f"languages ({', '.join(self.languages)})"
            )
        self.other_languages = [x for x in self.languages if x != cfg.identify_language]

    def baseline(self) -> None:
        """2. baseline answers of every prompt."""
        t0 = time.perf_counter()
        _say(self.cfg, "2/6 baseline answers of every prompt")
        self.evaluate(baseline=True)
        self.clock.stage("baseline", t0)

    def stats(self) -> None:
        """3. stats as in the paper: correct identification prompts, 4x negatives; the
        relations with too few of them are skipped."""
        from warehouse.analysis.stats import run_stats, stats_path
        from warehouse.store.files import sha256_file

        cfg, root, t0 = self.cfg, self.root, time.perf_counter()
        _say(self.cfg, "3/6 neuron statistics (AP per relation and language)")
        common = dict(site=self.site, pooling="mean", negatives=NEGATIVES)
        run_stats(
            root,
            **common,
            split="identify",
            seed=cfg.seed,
            filter_correct=True,
            show_progress=cfg.show_progress,
        )
        self.stats_file = stats_path(root, **common)
        self.stats_sha = sha256_file(self.stats_file)
        self.clock.stage("stats", t0)
        self.counts = identify_counts(root, self.prompts, cfg.identify_language)
        skipped = {r: _shortfall(cfg, self.counts[r]) for r in self.relations}
        self.skipped = {r: row for r, row in skipped.items() if row is not None}
        self.relations = [r for r in self.relations if r not in self.skipped]
        for rel, row in self.skipped.items():
            _say(cfg, f"skipping {rel}: {row['why']}", always=True)
        if not self.relations:
            raise WarehouseError(
                f"no relation has {cfg.min_correct} or more correctly answered identification "
                f"prompts from {cfg.min_subjects} or more subjects in "
                f"{cfg.identify_language!r}; the model knows too few of these facts (lower "
                "--min-correct / --min-subjects to study them anyway)"
            )
        self.progress.advance(1)

    def select(self) -> None:
        """4. selections, remade when the stats changed."""
        from warehouse.store.files import atomic_write_json
        from warehouse.store.fingerprint import entry, entry_is_current

        cfg, t0 = self.cfg, time.perf_counter()
        _say(self.cfg, f"4/6 selections: top {self.top_k} per relation, sweep {self.sweep}")
        self.old = _read_old(self.root / STUDY_FILE)
        self.plan_key = selections_key(
            self.stats_file, self.site, NEGATIVES, cfg.identify_language, self.top_k, self.sweep
        )
        self.fresh = not entry_is_current(self.old.get("plan"), self.plan_key)
        self.names = _make_selections(
            self.root,
            self.relations,
            cfg.identify_language,
            self.site,
            NEGATIVES,
            self.top_k,
            self.sweep,
            self.fresh,
        )
        self.clock.stage("select", t0)
        partial = {
            "stats_sha256": self.stats_sha,
            "plan": entry(self.plan_key),
            "seconds": self.clock.seconds,
        }
        atomic_write_json(self.root / STUDY_FILE, {**self.old, **partial})
        # From here the number of steps is known: every eval request of every relation.
        per_relation = 3 + len(self.sweep) + bool(self.other_languages) + 1
        self.progress.add_total(len(self.relations) * per_relation)
        self.progress.advance(1)

    def language_sets(self) -> None:
        """4b. per-language sets: each relation's top-k found on another language's prompts,
        for every language with enough correctly answered identification prompts (the
        minimums of a relation). Nothing to do in a one-language study."""
        self.lang_sets: dict[str, dict[str, str]] = {}
        self.lang_counts: dict[str, dict[str, dict[str, int]]] = {}
        self.lang_skipped: dict[str, dict[str, dict[str, Any]]] = {}
        if not self.other_languages:
            return
        t0 = time.perf_counter()
        _say(self.cfg, f"4/6 per-language selections in {', '.join(self.other_languages)}")
        self.lang_sets, self.lang_counts, self.lang_skipped = _language_selections(
            self.root,
            self.cfg,
            self.prompts,
            self.relations,
            self.other_languages,
            LanguagePlan(self.site, self.top_k, self.fresh),
        )
        self.clock.stage("language_sets", t0)

    def ablations(self) -> None:
        """5. the eval requests of every relation, run together."""
        t0 = time.perf_counter()
        _say(self.cfg, f"5/6 ablations of {len(self.relations)} relations")
        self.run_all([req for rel in self.relations for req in self._requests(rel)])
        self.clock.stage("eval", t0)

    def _requests(self, rel: str) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        """The eval requests of one relation: (where in `files`, options)."""
        cfg = self.cfg
        idl = [cfg.identify_language]
        sel, sweep_sel = self.names[rel]["top"], self.names[rel]["sweep"]
        others = [r for r in self.relations if r != rel]
        own = dict(relations=[rel], languages=idl, sample=cfg.sample)
        test = dict(split="test", selection=sel)
        out: list[tuple[tuple[str, ...], dict[str, Any]]] = [
            (("intra", rel), dict(selection=sel, controls=cfg.controls, split="all", **own)),
            (
                ("sweep_own", rel),
                dict(selection=sweep_sel, top_counts=self.sweep, split="test", **own),
            ),
        ]
        if others:
            sweep = dict(selection=sweep_sel, top_counts=self.sweep, split="test")
            sweep |= dict(relations=others, languages=idl, sample=cfg.others_sample)
            out.append((("sweep_others", rel), sweep))
        else:
            self.progress.advance(1)
        cross = dict(relations=self.relations, languages=idl, sample=cfg.sample)
        out.append((("cross_relation", rel), test | cross))
        if self.other_languages:
            langs = dict(relations=[rel], languages=self.other_languages, sample=cfg.sample)
            out.append((("cross_lingual", rel), test | langs | dict(controls=cfg.controls)))
        self.files["ranges"][rel] = {}
        for (a, b), rng in self.names[rel]["ranges"].items():
            out.append((("ranges", rel, f"{a}-{b}"), own | dict(selection=rng, split="test")))
        return out

    def language_ablations(self) -> None:
        """5c. each per-language set off, with controls, on its relation's test prompts in
        every language of the study (`evals.language_ablation`: {relation: {language of the
        set: eval file}}); the identification language's set is `study-<relation>`, whose
        intra and cross-lingual evals already cover it."""
        cfg = self.cfg
        steps = sum(len(sets) for sets in self.lang_sets.values())
        if not steps:
            return
        t0 = time.perf_counter()
        self.progress.add_total(steps)
        _say(cfg, f"5/6 per-language sets off in {', '.join(self.languages)}")
        langs = dict(languages=self.languages, split="test", sample=cfg.sample)
        langs |= dict(controls=cfg.controls)
        self.files["language_ablation"] = {rel: {} for rel in self.lang_sets}
        self.run_all(
            [
                (("language_ablation", rel, lang), dict(selection=name, relations=[rel], **langs))
                for rel, sets in self.lang_sets.items()
                for lang, name in sets.items()
            ]
        )
        self.clock.stage("language_ablation", t0)

    def templates(self) -> None:
        """5b. held-out templates: neurons found on some templates, tested on the others."""
        t0 = time.perf_counter()
        plan = HeldOut(
            site=self.site,
            negatives=NEGATIVES,
            top_k=self.top_k,
            fresh=self.fresh,
            old=self.old,
        )
        self.split_t, self.files["templates"], self.t_stats = _held_out_templates(
            self.root, self.cfg, self.prompts, self.relations, plan, self.run
        )
        # a relation with no held-out-template eval still counts its step
        self.progress.advance(len(self.relations) - len(self.files["templates"]))
        self.clock.stage("templates", t0)

    def perplexity(self) -> None:
        """6. specificity: perplexity of neutral sentences with each relation's top-k off."""
        t0 = time.perf_counter()
        _say(self.cfg, "6/6 perplexity of neutral sentences with each relation's neurons off")
        top = {r: self.names[r]["top"] for r in self.relations}
        self.ppl_file = _perplexities(self.root, self.loaded, top, self.cfg, self.site)
        self.clock.stage("perplexity", t0)
        self.progress.advance(1)

    def record(self) -> Path:
        """study/study.json: the configuration, where each part is, and the stage times."""
        from warehouse.store.files import atomic_write_json
        from warehouse.store.fingerprint import entry

        cfg, root, old = self.cfg, self.root, self.old
        seconds = self.clock.seconds
        if not self.fresh and isinstance(old.get("seconds"), dict):
            # A resumed study: keep what the earlier run spent in stages this one only reused.
            seconds = {k: max(v, old["seconds"].get(k, 0.0)) for k, v in seconds.items()}
        record = {
            "config": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(cfg).items()
                if k not in ("show_progress",)
            },
            "model": self.manifest.model.name,
            "weights_hash": self.manifest.model.weights_hash,
            "site": self.site,
            "units_total": self.units_total,
            "top_k": self.top_k,
            "sweep": self.sweep,
            "ranges": [list(r) for r in ranges(self.sweep)],
            "plan": entry(self.plan_key),
            "relations": self.relations,
            "skipped": self.skipped,
            "identify_correct": {r: c["prompts"] for r, c in sorted(self.counts.items())},
            "identify_subjects": {r: c["subjects"] for r, c in sorted(self.counts.items())},
            "template_split": self.split_t,
            "language_sets": self.lang_sets,
            "language_counts": self.lang_counts,
            "language_skipped": self.lang_skipped,
            **self.t_stats,
            "languages": self.languages,
            "identify_language": cfg.identify_language,
            "negatives": NEGATIVES,
            "stats_file": self.stats_file.relative_to(root).as_posix(),
            "stats_sha256": self.stats_sha,
            "selections": {r: _names_record(self.names[r]) for r in self.relations},
            "evals": self.files,
            "perplexity": self.ppl_file,
            "seconds": seconds,
        }
        atomic_write_json(root / STUDY_FILE, record)
        return root / STUDY_FILE


def _names_record(names: dict[str, Any]) -> dict[str, Any]:
    return {**names, "ranges": {f"{a}-{b}": n for (a, b), n in names["ranges"].items()}}


def _read_old(path: Path) -> dict[str, Any]:
    from warehouse.store.files import read_json

    try:
        return read_json(path) if path.is_file() else {}
    except Exception:  # an unreadable record only means nothing can be reused
        return {}


def _prompts(root: Path):
    """prompts.parquet's columns the study counts with; `subject_id` (the subject's identity
    across templates and languages) is `subject` in warehouses that lack it."""
    import polars as pl
    import pyarrow.parquet as pq

    from warehouse.store.tables import read_table

    path = root / PROMPTS_FILE
    subject = "subject_id" if "subject_id" in pq.read_schema(path).names else "subject"
    cols = ["prompt_id", "relation", "language", "split", "template", subject]
    frame = pl.from_arrow(read_table(path, columns=cols))
    assert isinstance(frame, pl.DataFrame)
    return frame.rename({subject: "subject_key"})


def identify_counts(
    root: Path, prompts, language: str, templates: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """Per relation of the warehouse: its identification prompts in `language` (of
    `templates`, when given) that the baseline answered correctly, and their distinct
    subjects; the prompts `warehouse stats --filter-correct` counts as positives."""
    import polars as pl

    from warehouse.analysis.stats import baseline_correct_ids

    ok = prompts.filter(
        (pl.col("split") == "identify")
        & (pl.col("language") == language)
        & pl.col("prompt_id").is_in(baseline_correct_ids(root).tolist())
    )
    if templates is not None:
        ok = ok.filter(pl.col("template").is_in(templates))
    got = ok.group_by("relation").agg(prompts=pl.len(), subjects=pl.col("subject_key").n_unique())
    by_rel = {r: {"prompts": p, "subjects": n} for r, p, n in got.iter_rows()}
    empty = {"prompts": 0, "subjects": 0}
    return {r: by_rel.get(r, empty) for r in sorted(prompts["relation"].unique().to_list())}


def _shortfall(cfg: StudyConfig, count: dict[str, int]) -> dict[str, Any] | None:
    """{prompts, subjects, why} when `count` is below the study's minimums, else None."""
    short = []
    if count["prompts"] < cfg.min_correct:
        short.append(
            f"{count['prompts']} correctly answered identification prompts (< {cfg.min_correct})"
        )
    if count["subjects"] < cfg.min_subjects:
        short.append(f"{count['subjects']} distinct subjects among them (< {cfg.min_subjects})")
    if not short:
        return None
    return {**count, "why": "; ".join(short)}


def language_set_name(relation: str, language: str) -> str:
    """The selection of `relation`'s top-k found on `language`'s prompts."""
    return f"study-{relation}-lang-{language}"


@dataclass(frozen=True)
class LanguagePlan:
    """What the per-language selections share with the main ones."""

    site: str
    top_k: int
    fresh: bool  # the stats or the plan changed: remake them


def _language_selections(
    root: Path,
    cfg: StudyConfig,
    prompts,
    relations: list[str],
    languages: list[str],
    plan: LanguagePlan,
) -> tuple[dict, dict, dict]:
    """({relation: {language: selection}}, {language: {relation: {prompts, subjects}}},
    {relation: {language: {prompts, subjects, why}}}): each relation's top-k by rank on
    `language`'s prompts of the study's stats, as `study-<relation>` is on the
    identification language's, where `language` reaches the study's minimums of correctly
    answered identification prompts and subjects; the others named with why."""
    from warehouse.analysis.selections import list_selections, select

    have = {s["name"] for s in list_selections(root)}
    names: dict[str, dict[str, str]] = {}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    skipped: dict[str, dict[str, dict[str, Any]]] = {}
    for lang in languages:
        got = identify_counts(root, prompts, lang)
        counts[lang] = {rel: got[rel] for rel in relations}
        for rel in relations:
            short = _shortfall(cfg, got[rel])
            if short is not None:
                skipped.setdefault(rel, {})[lang] = short
                _say(cfg, f"no {lang} set for {rel}: {short['why']}", always=True)
                continue
            name = language_set_name(rel, lang)
            if plan.fresh or name not in have:
                common = dict(site=plan.site, negatives=NEGATIVES, overwrite=True)
                select(root, name, rel, lang, top=plan.top_k, **common)
            names.setdefault(rel, {})[lang] = name
    return names, counts, skipped


def template_split(
    prompts, relations: list[str], language: str, seed: int
) -> dict[str, dict[str, Any]]:
    """For each relation with >= 2 templates in `language`: {"select": [...], "test": [...]},
    the sorted templates permuted by default_rng([seed, first 8 bytes of sha256(relation)]),
    the first len // 2 held out for testing, the rest for selection."""
    import polars as pl

    out = {}
    for rel in relations:
        of_rel = prompts.filter((pl.col("relation") == rel) & (pl.col("language") == language))
        templates = sorted(of_rel["template"].unique().to_list())
        if len(templates) < 2:
            continue
        digest = hashlib.sha256(rel.encode()).digest()
        order = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")]).permutation(
            len(templates)
        )
        n_test = len(templates) // 2
        out[rel] = {
            "select": sorted(templates[i] for i in order[n_test:]),
            "test": sorted(templates[i] for i in order[:n_test]),
        }
    return out


@dataclass(frozen=True)
class HeldOut:
    """What the held-out-template step shares with the rest of the study."""

    site: str
    negatives: str
    top_k: int
    fresh: bool  # the main stats or the plan changed: remake selections
    old: dict[str, Any]  # the previous study.json


def _held_out_templates(
    root: Path,
    cfg: StudyConfig,
    prompts,
    relations: list[str],
    plan: HeldOut,
    run: Callable[..., str],
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Any]]:
    """(template_split, evals per relation, the template stats' file and sha256).

    Stats over every `identify_language` template except the held-out ones (other relations'
    prompts stay negatives), each relation's top-k from them, evaluated on its test prompts
    of the held-out templates with `cfg.controls` controls. A relation whose selection
    templates give too few correct prompts or subjects, or whose held-out templates have no
    test prompts, gets a "why" in its split entry and no eval."""
    import polars as pl

    from warehouse.analysis.selections import list_selections, select
    from warehouse.store.files import sha256_file
    from warehouse.store.fingerprint import entry, entry_is_current

    lang = cfg.identify_language
    split = template_split(prompts, relations, lang, cfg.seed)
    if not split:
        return {}, {}, {}
    _say(cfg, f"5/6 held-out templates: {len(split)} relations")
    held = {t for part in split.values() for t in part["test"]}
    in_lang = prompts.filter(pl.col("language") == lang)
    kept = sorted(set(in_lang["template"].to_list()) - held)
    common = dict(site=plan.site, pooling="mean", negatives=plan.negatives)
    path, key = _template_stats(root, cfg, plan, kept)
    fresh = plan.fresh or not entry_is_current(plan.old.get("template_plan"), key)
    have = {s["name"] for s in list_selections(root)}
    counts = identify_counts(root, prompts, lang, kept)
    files = {}
    for rel, part in split.items():
        part.update(counts[rel])
        tests = in_lang.filter(
            (pl.col("relation") == rel)
            & (pl.col("split") == "test")
            & pl.col("template").is_in(part["test"])
        )
        short = _shortfall(cfg, counts[rel])
        if short or not tests.height:
            why = f"selection templates: {short['why']}" if short else "no held-out test prompts"
            part["why"] = why
            _say(cfg, f"no held-out-template check for {rel}: {why}", always=True)
            continue
        name = f"study-{rel}-templates"
        if fresh or name not in have:
            select(root, name, rel, lang, top=plan.top_k, overwrite=True, templates=kept, **common)
        own = dict(relations=[rel], languages=[lang], split="test", sample=cfg.sample)
        files[rel] = run(name, controls=cfg.controls, templates=part["test"], **own)
    record = {
        "template_stats_file": path.relative_to(root).as_posix(),
        "template_stats_sha256": sha256_file(path),
        "template_plan": entry(key),
    }
    return split, files, record


def _template_stats(
    root: Path, cfg: StudyConfig, plan: HeldOut, kept: list[str]
) -> tuple[Path, CacheKey]:
    """Stats over the `kept` templates alone: their file and the key of selections from it."""
    from warehouse.analysis.stats import run_stats, stats_path

    common = dict(site=plan.site, pooling="mean", negatives=plan.negatives)
    progress = cfg.show_progress
    run_stats(
        root, **common, seed=cfg.seed, filter_correct=True, show_progress=progress, templates=kept
    )
    path = stats_path(root, **common, templates=kept)
    return path, selections_key(path, plan.site, plan.negatives, cfg.identify_language, plan.top_k)


def _make_selections(
    root: Path,
    relations: list[str],
    language: str,
    site: str,
    negatives: str,
    top_k: int,
    sweep: list[int],
    fresh: bool,
) -> dict[str, dict[str, Any]]:
    """Per relation: names of its top-k, sweep and rank-range selections (made when missing,
    remade when `fresh`)."""
    from warehouse.analysis.selections import list_selections, select
    from warehouse.analysis.selections import sql_literal as lit

    have = {s["name"] for s in list_selections(root)}
    out: dict[str, dict[str, Any]] = {}
    for rel in relations:
        top, big = f"study-{rel}", f"study-{rel}-sweep"
        common = dict(relation=rel, language=language, site=site, negatives=negatives)
        for name, k in ((top, top_k), (big, max(sweep))):
            if fresh or name not in have:
                select(root, name, top=k, overwrite=True, **common)
        rng: dict[tuple[int, int], str] = {}
        for a, b in ranges(sweep):
            name = f"study-{rel}-ranks-{a}-{b}"
            if fresh or name not in have:
                sql = (
                    "SELECT neuron_id, ap AS score FROM stats\n"
                    f"WHERE site = {lit(site)} AND pooling = 'mean' AND negatives = "
                    f"{lit(negatives)}\n  AND relation = {lit(rel)} AND language = "
                    f"{lit(language)} AND rank > {a} AND rank <= {b}\nORDER BY rank"
                )
                select(root, name, sql=sql, overwrite=True, **common)
            rng[(a, b)] = name
        out[rel] = {"top": top, "sweep": big, "ranges": rng}
    return out


PPL_CONTROLS = 3  # random sets whose perplexity is measured beside each relation's own set


def _perplexities(
    root: Path, loaded: Any, selections: dict[str, str], cfg: StudyConfig, site: str
) -> str:
    """study/perplexity.parquet: relation, selection, size, control_seed, ppl_baseline,
    ppl_ablated. One row per relation with its own set off (control_seed null), and one per
    random set of the same per-layer counts, seeds cfg.seed + i for i < min(controls,
    PPL_CONTROLS) (the random sets of the intra evals). Reused when the model, sentences,
    selections and controls are the same."""
    from warehouse.analysis.ablation import control_ids, neuron_indices
    from warehouse.analysis.perplexity import perplexities, perplexity_key, read_sentences
    from warehouse.analysis.selections import read_selection, selection_paths
    from warehouse.store.files import sha256_file
    from warehouse.store.fingerprint import is_current, warehouse_fingerprint, write_sidecar
    from warehouse.store.manifest import load_manifest
    from warehouse.store.tables import write_table

    path = root / PERPLEXITY_FILE
    sentences = read_sentences(cfg.sentences)
    seeds = [cfg.seed + i for i in range(min(cfg.controls, PPL_CONTROLS))]
    files = {r: sha256_file(selection_paths(root, n)[0]) for r, n in selections.items()}
    key = perplexity_key(warehouse_fingerprint(load_manifest(root)), sentences, files, seeds)
    if is_current(path, key):
        return path.relative_to(root).as_posix()
    names = ("relation", "selection", "size", "control_seed", "ppl_baseline", "ppl_ablated")
    labels: list[tuple[str, str, int, int | None]] = []  # per neuron set: the first 4 columns
    ablations: list[Any] = [{}]  # the baseline first
    for rel, name in selections.items():
        sel = read_selection(root, name)
        own = sel.frame["neuron_id"].to_numpy()
        units, n_layers = sel.meta["units"], sel.meta["n_layers"]
        sets = [(None, own)] + [(s, control_ids(own, units, n_layers, s)) for s in seeds]
        for seed, ids in sets:
            labels.append((rel, name, len(ids), seed))
            ablations.append({site: neuron_indices(loaded.model, site, ids, expected_units=units)})
    base, *values = perplexities(loaded, sentences, ablations)
    rows: dict[str, list] = {k: [] for k in names}
    for label, value in zip(labels, values, strict=True):
        for k, v in zip(names, (*label, base, value), strict=True):
            rows[k].append(v)
    write_table(path, pa.table(rows, schema=PERPLEXITY_SCHEMA))
    write_sidecar(path, key, {"rows": len(rows["relation"]), "sentences": len(sentences)})
    return path.relative_to(root).as_posix()


def demo_config(out: Path, show_progress: bool = True) -> StudyConfig:
    """The `warehouse demo` study: embedded model, built-in data, English only, up to 100
    eval prompts per relation x split and 20 random sets per controlled condition (twice the
    paper's 10), so that it finishes within 20 minutes on 2 CPU cores.

    English only: the embedded SmolLM2-135M answers about 1 % of the built-in German prompts,
    so a German cross-lingual cell would sit at a zero baseline and test nothing. 100 prompts
    take every English test prompt of each relation (82-100: every test subject, 41-50)."""
    return StudyConfig(
        out=out,
        languages=["en"],
        controls=20,
        sample=100,
        others_sample=2,
        show_progress=show_progress,
        extra={"demo": True},
    )
