"""The study's eval stages, one neuron set per forward pass vs the sets of a batch stacked,
side by side on the same warehouse, with every answer compared.

    python bench/study_eval.py [--relations country_capital,country_currency,city_country]
                               [--sample 40] [--controls 5] [--rounds 2] [--json out.json]
                               [--warehouse W]

Runs `warehouse study` (the demo's options on the chosen relations: English, `--sample`
prompts per cell, `--controls` random sets) once to make the warehouse, its baseline, stats
and selections. Then, `--rounds` times and in alternating order, it removes the study's eval
files and runs the study again with `stack_rows` 1 (one neuron set per forward, as before
the option) and with the default: only the eval stages run again (the rest is reused). Each
run's seconds are the study's own clock of its eval stages (eval, language_ablation,
templates); a round's ratio is its `1` time over its default time. Every answer of every eval
file is compared between the two; a differing one is printed with its prompt and condition.
`--relations all` takes every relation (the demo's study); `--warehouse W` makes (or reuses,
when the options match) the study in W and keeps it, e.g. a finished `demo-warehouse`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from warehouse.analysis.evaluate import EvalConfig
from warehouse.study import StudyConfig, demo_config, run_study

EVAL_STAGES = ("eval", "language_ablation", "templates")
KEY = ["selection", "count", "control_seed", "prompt_id"]


def _config(out: Path, args: argparse.Namespace, stack_rows: int) -> StudyConfig:
    cfg = demo_config(out, show_progress=False)
    cfg.relations = None if args.relations == "all" else args.relations.split(",")
    cfg.sample, cfg.controls, cfg.stack_rows = args.sample, args.controls, stack_rows
    return cfg


def _clear_evals(root: Path) -> None:
    """Remove every eval file but the baseline, and the stage seconds of the last run (a
    resumed study keeps the larger of its own and the recorded ones)."""
    for f in (root / "evals").glob("*"):
        if f.is_file() and not f.name.startswith("baseline."):
            f.unlink()
    record = root / "study" / "study.json"
    data = json.loads(record.read_text())
    data.pop("seconds", None)
    record.write_text(json.dumps(data))


def _timed(root: Path, args: argparse.Namespace, stack_rows: int) -> tuple[float, pl.DataFrame]:
    """(seconds of the eval stages, every answer) of one study run."""
    _clear_evals(root)
    t0 = time.perf_counter()
    record = json.loads(run_study(_config(root, args, stack_rows)).read_text())
    wall = time.perf_counter() - t0
    seconds = sum(record["seconds"].get(k, 0.0) for k in EVAL_STAGES)
    print(f"  stack_rows {stack_rows:>4}: eval stages {seconds:7.1f} s (whole call {wall:.1f} s)")
    answers = [
        pl.read_parquet(f).select(*KEY, "generated").with_columns(file=pl.lit(f.name))
        for f in sorted((root / "evals").glob("*.parquet"))
        if not f.name.startswith("baseline.")
    ]
    return seconds, pl.concat(answers).sort("file", *KEY)


def _compare(a: pl.DataFrame, b: pl.DataFrame) -> int:
    """Rows whose answers differ (printed); the two must hold the same rows."""
    if a.drop("generated").rows() != b.drop("generated").rows():
        raise SystemExit("the two runs wrote different eval rows")
    diff = a.with_columns(other=b["generated"]).filter(pl.col("generated") != pl.col("other"))
    for row in diff.iter_rows(named=True):
        print(f"  differs: {row}")
    return diff.height


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--relations", default="country_capital,country_currency,city_country")
    ap.add_argument("--sample", type=int, default=40)
    ap.add_argument("--controls", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--warehouse", type=Path, default=None)
    args = ap.parse_args()
    default = EvalConfig().stack_rows
    with tempfile.TemporaryDirectory() as tmp:
        root = args.warehouse or Path(tmp) / "w"
        t0 = time.perf_counter()
        run_study(_config(root, args, default))
        print(f"study made in {time.perf_counter() - t0:.0f} s: {args.relations}")
        times: dict[int, list[float]] = {1: [], default: []}
        answers: dict[int, pl.DataFrame] = {}
        for r in range(args.rounds):
            for stack in (1, default) if r % 2 == 0 else (default, 1):
                seconds, answers[stack] = _timed(root, args, stack)
                times[stack].append(seconds)
        rows, differing = answers[1].height, _compare(answers[1], answers[default])
        if args.warehouse is None:
            shutil.rmtree(root)
    ratios = [a / b for a, b in zip(times[1], times[default], strict=True)]
    print(
        f"eval stages, stack_rows 1 / {default}: rounds {', '.join(f'{x:.2f}x' for x in ratios)}"
        f" (median {statistics.median(ratios):.2f}x); answers equal {rows - differing}/{rows}"
    )
    if args.json:
        record = {"args": vars(args) | {"json": str(args.json)}, "seconds": times,
                  "ratios": ratios, "answers": rows, "differing": differing}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
