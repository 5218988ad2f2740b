"""The `warehouse` command line: thin commands that each call one library function and turn
named errors into one-line messages."""

from __future__ import annotations

import importlib
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from warehouse.options import (
    AccuraciesJson,
    AsJson,
    Baseline,
    BatchSize,
    Capture,
    Controls,
    Dataset,
    Device,
    EvalSharedPrefix,
    Folder,
    Force,
    Fractions,
    IdentifyLanguage,
    Languages,
    Layers,
    Match,
    MaxNewTokens,
    MaxPrompts,
    MinCorrect,
    MinSubjects,
    Model,
    ModelCopy,
    ModelDtype,
    Negatives,
    OnNonfinite,
    OthersSample,
    Overwrite,
    Pooling,
    Poolings,
    PromptChunk,
    Quiet,
    Ray,
    Relations,
    Report,
    Sample,
    Seed,
    Selection,
    Sentences,
    Shard,
    Shards,
    SharedPrefix,
    Site,
    Sites,
    Split,
    StackRows,
    StorageDtype,
    StudyOut,
    StudySite,
    Sweep,
    Templates,
    TokenChunk,
    TopCounts,
    TopK,
    Where,
    local_out,
    local_warehouse,
)
from warehouse.store.errors import WarehouseError
from warehouse.store.version import __version__

if TYPE_CHECKING:
    from warehouse.store.manifest import Manifest

app = typer.Typer(
    help="relation-warehouse: find and test relation-specific neurons in LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        print(f"relation-warehouse {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    _state["debug"] = debug


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _numbers(value: str | None, kind: type[int] | type[float], option: str) -> list | None:
    """A comma-separated list of numbers, or a one-line error naming the option."""
    items = _split(value)
    if items is None:
        return None
    try:
        return [kind(x) for x in items]
    except ValueError:
        what = "whole numbers" if kind is int else "numbers"
        raise WarehouseError(
            f"{option} takes comma-separated {what} (e.g. {'10,50' if kind is int else '0.01,0.1'})"
            f", not {value!r}"
        ) from None


@app.command()
def datasets(
    dataset: Dataset = None,
    as_json: AsJson = False,
    seed: Seed = 0,
) -> None:
    """List datasets and relations with fact counts per language and split."""
    from warehouse.ingest.datasets import describe, load_dataset

    info = describe(load_dataset(dataset), seed=seed)
    if as_json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dataset {info['name']} ({info['hash'][:19]})")
    for col in ("relation", "language", "facts", "identify", "test", "templates"):
        table.add_column(col, justify="left" if col in ("relation", "language") else "right")
    for rel, langs in info["relations"].items():
        for lang, c in langs.items():
            table.add_row(
                rel, lang, str(c["facts"]), str(c["identify"]), str(c["test"]), str(c["templates"])
            )
    Console().print(table)


@app.command()
def ingest(
    out: local_out("ingest"),
    model: Model = "smollm2-135m",
    dataset: Dataset = None,
    relations: Relations = None,
    languages: Languages = None,
    split: Split = "all",
    sites: Sites = "ffn.act",
    layers: Layers = None,
    capture: Capture = "tokens",
    pooling: Poolings = "mean,max,last",
    dtype: StorageDtype = "float16",
    batch_size: BatchSize = 32,
    device: Device = "cpu",
    model_dtype: ModelDtype = "float32",
    max_prompts: MaxPrompts = None,
    seed: Seed = 0,
    token_chunk: TokenChunk = 1024,
    prompt_chunk: PromptChunk = 256,
    shard: Shard = None,
    ray: Ray = None,
    shards: Shards = None,
    on_nonfinite: OnNonfinite = "warn",
    shared_prefix: SharedPrefix = None,
    quiet: Quiet = False,
) -> None:
    """Run a model over relation prompts and store FFN activations in a warehouse."""
    from warehouse.ingest.run import IngestConfig
    from warehouse.ingest.shards import parse_shard
    from warehouse.scale import Placement, dispatch
    from warehouse.store.manifest import Manifest

    where = Placement(shard=parse_shard(shard), ray=ray, shards=shards)
    cfg = IngestConfig(
        out=out,
        model=model,
        dataset=dataset,
        relations=_split(relations),
        languages=_split(languages),
        split=split,
        sites=sites,
        layers=layers,
        capture=capture,
        pooling=_split(pooling) or [],
        dtype=dtype,
        batch_size=batch_size,
        device=device,
        model_dtype=model_dtype,
        max_prompts=max_prompts,
        seed=seed,
        token_chunk=token_chunk,
        prompt_chunk=prompt_chunk,
        on_nonfinite=on_nonfinite,
        shared_prefix=shared_prefix,
    )
    m = dispatch(cfg, where, show_progress=not quiet)
    assert isinstance(m, Manifest)
    c = m.counts
    print(f"{out}: {c.prompts} prompts, {c.tokens} tokens, status {m.state.status}")


@app.command()
def info(
    warehouse: Where,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show what a warehouse holds: model, dataset, sites, counts, state, and the stats,
    selections and evals written into it (name and rows of each)."""
    from warehouse.store.derived_pooling import derived_specs
    from warehouse.store.location import Location
    from warehouse.store.manifest import describe_nonfinite, load_manifest

    loc = Location.of(warehouse)
    m = load_manifest(loc)
    if as_json:
        print(json.dumps(m.to_json(), indent=2, ensure_ascii=False))
        return
    model, ds, cap, st = m.model, m.dataset, m.capture, m.state
    print(f"warehouse   {warehouse} (format v{m.format_version}, tool {m.tool_version})")
    print(
        f"model       {model.name} [{model.architecture}, {model.n_layers} layers] "
        f"{model.weights_hash[:23]}"
    )
    print(f"dataset     {ds.name} {ds.hash[:23]} split={ds.split}")
    print(
        f"capture     sites={','.join(cap.sites)} layers={len(cap.layers)} "
        f"mode={cap.mode} pooling={','.join(cap.pooling)} dtype={cap.dtype}"
    )
    print(f"rows        {m.counts.prompts:,} prompts, {m.counts.tokens:,} tokens")
    print(f"state       {st.status} ({_committed(loc, m)})")
    for key, a in m.arrays.items():
        shards = f" shards {a['shards']}" if a.get("shards") else ""
        print(f"array       {key} {a['shape']} chunks {a['chunks']}{shards} {a['dtype']}")
    for key, spec in derived_specs(m).items():
        assert spec.source is not None
        print(f"array       {key} {list(spec.shape)} derived from {spec.source.key}")
    for line in describe_nonfinite(m.nonfinite or {}, cap.dtype):
        print(f"nonfinite   {line}")
    for view, name, rows in _derived_tables(loc):
        print(f"{view:<11} {name} ({rows:,} rows)")


def _committed(loc, manifest: Manifest) -> str:
    """What is on disk: per-token arrays commit tokens; a pooled capture stores one row per
    prompt, so its tokens are those of the committed prompts (run, pooled, not stored)."""
    st = manifest.state
    prompts = st.prompts_committed
    if manifest.capture.per_token:
        return f"{prompts:,} prompts, {st.tokens_committed:,} tokens committed"
    if prompts >= manifest.counts.prompts:
        tokens = manifest.counts.tokens
    else:
        from warehouse.store.format import PROMPTS_FILE
        from warehouse.store.tables import read_table_at

        offsets = read_table_at(loc, PROMPTS_FILE, ["token_offset"]).column(0)
        tokens = offsets[prompts].as_py()
    return f"{prompts:,} prompts committed, their {tokens:,} tokens pooled"


def _derived_tables(loc) -> list[tuple[str, str, int]]:
    """(view, file name without .parquet, rows) of every stats, selections and evals file;
    the rows come from each file's Parquet footer."""
    import pyarrow.parquet as pq

    from warehouse.store.format import DERIVED_VIEWS

    out = []
    for view in DERIVED_VIEWS:
        for name in loc.listdir(view):
            if name.endswith(".parquet"):
                with loc.open(f"{view}/{name}") as f:
                    out.append(
                        (view, name.removesuffix(".parquet"), pq.ParquetFile(f).metadata.num_rows)
                    )
    return out


@app.command()
def verify(warehouse: Where) -> None:
    """Check every table, array chunk and checksum; exit 1 on any problem.

    A warehouse whose ingest stopped is checked up to its last committed batch (a NOTE says
    so); a stale writer lock, links, stray and temp files are problems.
    """
    from warehouse.store.checksums import verify as run_verify

    report = run_verify(warehouse)
    for p in report.problems:
        print(f"PROBLEM {p}")
    for n in report.notes:
        print(f"NOTE {n}")
    if not report.ok:
        print(f"{warehouse}: {len(report.problems)} problem(s) in {report.checked_files} files")
        raise typer.Exit(1)
    print(f"{warehouse}: OK ({report.checked_files} files checked)")


@app.command()
def query(
    warehouse: Where,
    sql: Annotated[
        str,
        typer.Argument(
            help="SQL over prompts, tokens, responses, activations, stats, selections, evals."
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json or parquet.")] = "table",
    output: Annotated[
        Path | None, typer.Option(help="Write to this file (never overwritten).")
    ] = None,
    engine: Annotated[str, typer.Option(help="polars or duckdb (both read every view).")] = (
        "polars"
    ),
    memory_limit: Annotated[
        str, typer.Option(help="Stop the query past this much memory (4GB, 512MiB).")
    ] = "4GB",
    timeout: Annotated[str, typer.Option(help="Stop the query after this long (300s, 5m).")] = (
        "300s"
    ),
) -> None:
    """Run a SQL query over the warehouse's tables and arrays (read-only, bounded)."""
    # Nothing here imports an engine: the query runs in a child process (forked while this
    # one has a single thread), which is killed past --memory-limit or --timeout.
    from warehouse.queries.limits import QueryLimits
    from warehouse.worker import isolated, request

    if output is not None:
        from warehouse.store.location import require_outside

        require_outside(output, [warehouse], "`warehouse query --output`")
    limits = QueryLimits.parse(memory_limit, timeout)
    where = warehouse if "memory:" not in warehouse else None
    if where is None:  # memory:// lives in this process only
        from warehouse.query import run_query

        text = run_query(warehouse, sql, fmt, output, engine=engine, limits=limits)
    else:
        out = str(output) if output is not None else None
        text = isolated(request("query", where, sql, engine, limits, fmt=fmt, output=out))
    if text is not None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        print(f"wrote {output}")


@app.command()
def stats(
    warehouse: local_warehouse("stats"),
    site: Site = None,
    pooling: Pooling = "mean",
    negatives: Negatives = "all",
    split: Split = "identify",
    seed: Seed = 0,
    filter_correct: Annotated[
        bool, typer.Option(help="Keep only prompts the model answers correctly (needs eval).")
    ] = False,
    template: Templates = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Score every neuron as a detector of each relation (AP, AUROC, SMD) into stats/."""
    from warehouse.analysis.stats import run_stats

    paths = run_stats(
        warehouse,
        site=site,
        pooling=pooling,
        negatives=negatives,
        split=split,
        seed=seed,
        filter_correct=filter_correct,
        show_progress=not quiet,
        force=force,
        templates=template or None,
    )
    for p in paths:
        print(f"wrote {p}")


@app.command()
def select(
    warehouse: local_warehouse("select"),
    name: Annotated[str, typer.Option(help="Name of the selection to store.")],
    relation: Annotated[str | None, typer.Option(help="Relation whose neurons to select.")] = None,
    language: Annotated[str, typer.Option(help="Language of the stats, or 'all'.")] = "all",
    site: Site = None,
    pooling: Pooling = "mean",
    negatives: Negatives = "all",
    top: Annotated[int | None, typer.Option(help="The K neurons of highest AP.")] = None,
    fraction: Annotated[
        float | None, typer.Option(help="A share of all the site's neurons, by AP.")
    ] = None,
    sql: Annotated[
        str | None, typer.Option(help="SELECT neuron_id [, score] FROM stats WHERE ...")
    ] = None,
    template: Templates = None,
    random_like: Annotated[
        str | None, typer.Option(help="Make a random control like this selection.")
    ] = None,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """Store a named neuron selection (top-K, fraction, SQL) or a random control."""
    from warehouse.analysis.selections import random_like as make_control
    from warehouse.analysis.selections import read_selection
    from warehouse.analysis.selections import select as make_selection

    if random_like is not None:
        make_control(warehouse, name, random_like, seed, overwrite=overwrite)
    else:
        make_selection(
            warehouse,
            name,
            relation,
            language,
            site,
            pooling,
            negatives,
            top=top,
            fraction=fraction,
            sql=sql,
            overwrite=overwrite,
            templates=template or None,
        )
    sel = read_selection(warehouse, name)
    print(f"selection {name}: {sel.frame.height} neurons of {sel.meta['site']}")


@app.command()
def selections(
    warehouse: Folder,
    as_json: AsJson = False,
) -> None:
    """List the warehouse's named selections."""
    from warehouse.analysis.selections import list_selections

    items = list_selections(warehouse)
    if as_json:
        print(json.dumps(items, indent=2, ensure_ascii=False))
        return
    for s in items:
        print(
            f"{s['name']:30s} {s.get('kind', '')}  {s.get('relation') or s.get('of') or ''}  "
            f"{s.get('site')}  {s.get('size', '')} neurons"
        )


@app.command()
def overlap(
    warehouse: Folder,
    names: Annotated[list[str], typer.Argument(help="Two or more selection names.")],
    by_layer: Annotated[bool, typer.Option(help="Per layer (exactly two names).")] = False,
) -> None:
    """Neurons shared between selections: counts and Jaccard, overall or per layer."""
    import polars as pl

    from warehouse.analysis.overlap import overlap as overlap_table
    from warehouse.analysis.overlap import overlap_by_layer

    if by_layer:
        if len(names) != 2:
            raise WarehouseError("--by-layer compares exactly two selections")
        df = overlap_by_layer(warehouse, names[0], names[1])
    else:
        df = overlap_table(warehouse, names)
    with pl.Config(tbl_rows=100, tbl_cols=-1):
        print(df)


@app.command(name="eval")
def eval_(
    warehouse: local_warehouse("eval"),
    selection: Selection = None,
    top_counts: TopCounts = None,
    fractions: Fractions = None,
    controls: Controls = 10,
    seed: Seed = 0,
    relations: Relations = None,
    languages: Languages = None,
    split: Split = "test",
    sample: Sample = None,
    max_new_tokens: MaxNewTokens = 2,
    match: Match = "prefix",
    batch_size: BatchSize = 32,
    stack_rows: StackRows = 256,
    shared_prefix: EvalSharedPrefix = True,
    model: ModelCopy = None,
    device: Device = "cpu",
    baseline: Baseline = False,
    as_json: AccuraciesJson = False,
    force: Force = False,
    shard: Shard = None,
    ray: Ray = None,
    shards: Shards = None,
    quiet: Quiet = False,
) -> None:
    """Deactivate a selection's neurons and score factual recall per prompt into evals/."""
    from warehouse.analysis.evaluate import EvalConfig, format_summary, summarize
    from warehouse.ingest.shards import parse_shard
    from warehouse.scale import Placement, dispatch

    where = Placement(shard=parse_shard(shard), ray=ray, shards=shards)
    cfg = EvalConfig(
        selection=selection,
        top_counts=_numbers(top_counts, int, "--top-counts"),
        fractions=_numbers(fractions, float, "--fractions"),
        controls=controls,
        seed=seed,
        relations=_split(relations),
        languages=_split(languages),
        split=split,
        sample=sample,
        max_new_tokens=max_new_tokens,
        match=match,
        batch_size=batch_size,
        stack_rows=stack_rows,
        shared_prefix=shared_prefix,
        model=model,
        device=device,
        baseline=baseline or selection is None,
        force=force,
    )
    path = dispatch(cfg, where, root=warehouse, show_progress=not quiet)
    if path is None:
        i, n = where.shard or (0, 0)
        print(f"shard {i}/{n} done; the last shard to finish writes the results")
        return
    assert isinstance(path, Path)
    summary = summarize(path)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if as_json else format_summary(summary))


@app.command()
def export(
    warehouse: Where,
    dest: Annotated[str, typer.Argument(help="New local folder (or .zip file with --zip).")],
    tables: Annotated[
        str | None,
        typer.Option(help="Tables to copy: tokens,stats,selections,evals (default: all present)."),
    ] = None,
    sites: Annotated[str | None, typer.Option(help="Sites to copy (default: all).")] = None,
    pooled_only: Annotated[
        bool, typer.Option("--pooled-only", help="Leave out the per-token activation arrays.")
    ] = False,
    as_zip: Annotated[
        bool, typer.Option("--zip", help="Write one .zip file that `open` reads directly.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Copy a consistent, checksummed subset of a warehouse to share it (folder or zip)."""
    from warehouse.store.export import ExportOptions
    from warehouse.store.export import export as run_export

    opts = ExportOptions(
        tables=_split(tables), sites=_split(sites), pooled_only=pooled_only, zip=as_zip
    )
    m = run_export(warehouse, dest, opts, show_progress=not quiet)
    print(
        f"{dest}: {len(m.arrays)} arrays, {len(m.tables)} tables, "
        f"{len(m.files)} derived files (verify it with `warehouse verify {dest}`)"
    )


@app.command()
def merge(
    warehouses: Annotated[list[str], typer.Argument(help="Warehouses or shard parts to merge.")],
    out: local_out("merge", "New warehouse folder."),
    quiet: Quiet = False,
) -> None:
    """Combine warehouses of one model and capture (other relations, languages, or the shards
    of one run) into one; stats, selections and evals are not carried over."""
    from warehouse.store.merge import merge as run_merge

    m = run_merge(list(warehouses), out, show_progress=not quiet)
    c = m.counts
    print(f"{out}: {c.prompts} prompts, {c.tokens} tokens from {len(warehouses)} inputs")


@app.command()
def serve(
    warehouse: Annotated[str, typer.Argument(help="Warehouse folder to serve.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 shares it with the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 8000,
    log: Annotated[bool, typer.Option(help="Print one line per request.")] = False,
) -> None:
    """Serve a warehouse read-only over HTTP with byte ranges, so `Warehouse.open(URL)` and
    every reading command fetch only what a query needs. Ctrl-C stops it."""
    from warehouse.serve import ServeConfig
    from warehouse.serve import serve as run_serve

    run_serve(ServeConfig(warehouse, host=host, port=port, log=log))


@app.command()
def study(
    out: StudyOut,
    model: Model = "smollm2-135m",
    dataset: Dataset = None,
    relations: Relations = None,
    languages: Languages = None,
    identify_language: IdentifyLanguage = "en",
    site: StudySite = "ffn.act",
    top_k: TopK = None,
    sweep: Sweep = None,
    controls: Controls = 10,
    sample: Sample = None,
    others_sample: OthersSample = 3,
    batch_size: BatchSize = 32,
    stack_rows: StackRows = 256,
    device: Device = "cpu",
    model_dtype: ModelDtype = "float32",
    seed: Seed = 0,
    min_correct: MinCorrect = 20,
    min_subjects: MinSubjects = 10,
    sentences: Sentences = None,
    report: Report = None,
    ray: Ray = None,
    shards: Shards = None,
    quiet: Quiet = False,
) -> None:
    """Run the paper's study end to end (ingest, baseline, stats, select, ablate, perplexity);
    each stage is reused when its inputs are unchanged."""
    from warehouse.study import StudyConfig

    cfg = StudyConfig(
        out=out,
        model=model,
        dataset=dataset,
        relations=_split(relations),
        languages=_split(languages),
        identify_language=identify_language,
        site=site,
        top_k=top_k,
        sweep=_numbers(sweep, int, "--sweep"),
        controls=controls,
        sample=sample,
        others_sample=others_sample,
        batch_size=batch_size,
        stack_rows=stack_rows,
        device=device,
        model_dtype=model_dtype,
        seed=seed,
        min_correct=min_correct,
        min_subjects=min_subjects,
        sentences=sentences,
        ray=ray,
        shards=shards,
        show_progress=not quiet,
    )
    _run_study(cfg, report)


def _report_folder(out: Path, warehouse: str | Path, option: str, overwrite: bool, create: bool):
    """The report's folder may not lie inside the warehouse (but for its `report/` folder)
    nor hold other files unless `overwrite` (store.files.claim_output_folder)."""
    from warehouse.store.files import claim_output_folder
    from warehouse.store.location import require_outside

    names = {"index.html", "summary.json"}
    require_outside(out, [warehouse], f"`warehouse report` ({option})", "report", names)
    claim_output_folder(out, overwrite, option=option, create=create)


def _run_study(cfg, report_dir: Path | None, option: str = "--report") -> None:
    import time

    from warehouse.analysis.findings import compute, format_headline
    from warehouse.study import run_study

    if report_dir is not None:  # refused before hours of work, not after
        from warehouse.analysis.report import render  # without matplotlib: one error line

        _report_folder(report_dir, cfg.out, option, overwrite=False, create=False)
    t0 = time.perf_counter()
    run_study(cfg)
    summary = compute(cfg.out)
    print(format_headline(summary))
    if report_dir is not None:
        _report_folder(report_dir, cfg.out, option, overwrite=False, create=True)
        index = render(summary, report_dir)
        print(f"report: {index}")
    print(f"study finished in {time.perf_counter() - t0:.0f} s; warehouse at {cfg.out}")


@app.command()
def report(
    warehouse: Where,
    out: Annotated[Path, typer.Option(help="Folder for index.html, figures, summary.json.")],
    as_json: Annotated[bool, typer.Option("--json", help="Also print the summary.")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(help="Write into a folder of other files (same-named files are replaced)."),
    ] = False,
) -> None:
    """Write a study's findings as an HTML page with PNG figures and summary.json."""
    from warehouse.analysis.findings import compute, format_headline
    from warehouse.analysis.report import render

    _report_folder(out, warehouse, "--out", overwrite, create=False)
    summary = compute(warehouse)
    _report_folder(out, warehouse, "--out", overwrite, create=True)
    index = render(summary, out)
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(format_headline(summary))
        print(f"report: {index}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Warehouse folder.")] = Path("demo-warehouse"),
    report: Annotated[
        Path | None, typer.Option(help="Report folder (default: OUT/report).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """The main job: `study` on the embedded model and built-in data (English, up to 100
    eval prompts per cell, 20 controls), then its report. Under 20 minutes on 2 CPU cores."""
    from warehouse.study import demo_config

    _run_study(demo_config(out, show_progress=not quiet), report or out / "report")


def _click_exceptions() -> tuple[tuple[type[Exception], ...], tuple[type[BaseException], ...]]:
    """(usage errors, aborts) of the click that typer runs on: typer vendors click from
    0.26.0 and raises its own copy's (typer._click), older typer the click package's; both
    are caught."""
    usage: list[type[Exception]] = []
    aborts: list[type[BaseException]] = [typer.Abort]
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        usage.append(module.ClickException)
        aborts.append(getattr(module, "Abort", typer.Abort))
    return tuple(usage), tuple(aborts)


def _expected_failures() -> tuple[type[Exception], ...]:
    """What bad input or a damaged file raises below the named errors: files that cannot be
    read or written, values that do not parse, text that is not UTF-8, a damaged safetensors,
    Parquet or Arrow file, a number too large to convert, data nested too deeply to parse."""
    kinds: list[type[Exception]] = [OSError, ValueError, OverflowError, RecursionError]
    for module, name in (
        ("safetensors", "SafetensorError"),
        ("pyarrow", "ArrowException"),
    ):
        try:
            kinds.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(kinds)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(e: BaseException) -> str:
    """An unexpected failure as one line: what and where, without the traceback."""
    if isinstance(e, OSError) and e.strerror:
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        return f"{where}: {e.strerror}" if where else e.strerror
    text = _one_line(str(e))
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _fail(message: str) -> None:
    print(f"error: {_one_line(message)}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    """The console script: every expected failure becomes one `error:` line and exit 2
    (`--debug` shows the traceback instead); `verify` exits 1 on damage by itself."""
    usage, aborts = _click_exceptions()
    try:
        # One program name in usage lines, whether started as `warehouse` or `python -m`.
        rc = app(standalone_mode=False, prog_name="warehouse")
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except aborts:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except usage as e:
        # click's own form, as every click CLI prints it: `Usage: …`, `Try '… --help'`,
        # `Error: …` on stderr, exit 2 (a bare `warehouse` prints the help instead).
        e.show()
        sys.exit(2)
    except WarehouseError as e:
        if _state["debug"]:
            raise
        _fail(str(e))
    except _expected_failures() as e:
        if _state["debug"]:
            raise
        args = shlex.join(sys.argv[1:])
        _fail(f"{_describe(e)} (for the traceback: warehouse --debug {args})")
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # python -m warehouse.cli
    main()
