"""The study's eval stages as they ran before stacking, shared prefixes and packed weights,
with stacking alone, with shared prefixes too, and as they run now, side by side on the same
warehouse, with every answer compared.

    python bench/study_eval.py [--relations country_capital,country_currency,city_country]
                               [--sample 40] [--controls 5] [--rounds 2] [--json out.json]
                               [--warehouse W]

Runs `warehouse study` (the demo's options on the chosen relations: English, `--sample`
prompts per cell, `--controls` random sets) once to make the warehouse, its baseline, stats
and selections. Then, `--rounds` times and in rotating order, it removes the study's eval
files and runs the study again in each variant: `before` (`stack_rows` 1, no shared
prefixes, `F.linear`: one neuron set per plain forward), `stacked` (`stack_rows` 256),
`shared` (and shared prefixes) and `now` (the defaults: and the linear layers on packed
weights, ingest/prepacked.py); only the eval stages run again (the rest is reused).
Each run's seconds are the study's own clock of its eval stages (eval, language_ablation,
templates); a round's ratio is its `before` time over the variant's. Every answer of every
eval file is compared with `before`; a differing one is printed with its prompt and
condition. It counts the FLOPs of every `nn.Linear` call of each variant (2 x rows x in x
out) and prints them with the seconds the same shapes take at this CPU's float32 matrix-
multiply rate (`F.linear`, 1,024 rows): how far a variant is from doing its linear work at
the rate of the bare matrix multiply. Last, the baseline answers of every prompt of the
warehouse are computed as before (no shared prefixes, `F.linear`) and as now (timed once
each) and compared; the study's baseline file is put back. `--relations all` takes every
relation (the demo's study); `--warehouse W` makes (or reuses, when the options match) the
study in W and keeps it, e.g. a finished `demo-warehouse`.
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
import torch

from warehouse.analysis.evaluate import EvalConfig
from warehouse.ingest import prepacked
from warehouse.study import StudyConfig, demo_config, run_study

EVAL_STAGES = ("eval", "language_ablation", "templates")
KEY = ["selection", "count", "control_seed", "prompt_id"]
# variant -> (stack_rows, shared_prefix, packed weights)
STACK = EvalConfig().stack_rows
VARIANTS = {
    "before": (1, False, False),
    "stacked": (STACK, False, False),
    "shared": (STACK, True, False),
    "now": (STACK, EvalConfig().shared_prefix, prepacked.ENABLED),
}


# FLOPs of every nn.Linear call (2 x rows x in x out), per (in, out) shape: what the
# variants compute, and what the CPU's matrix multiply could do with it (`_ceiling`).
LINEAR_FLOPS: dict[tuple[int, int], int] = {}


def _counted(module: torch.nn.Module, args: tuple) -> None:
    """A forward pre-hook on every module: it sees a linear layer's call whichever forward
    runs it (F.linear's or the packed one)."""
    if isinstance(module, torch.nn.Linear):
        shape, x = (module.in_features, module.out_features), args[0]
        rows = x.numel() // x.shape[-1]
        LINEAR_FLOPS[shape] = LINEAR_FLOPS.get(shape, 0) + 2 * rows * shape[0] * shape[1]


def _ceiling(flops: dict[tuple[int, int], int], rows: int = 1024) -> float:
    """Seconds that `flops` take at this CPU's float32 matrix-multiply rate for each shape
    (`rows` x in times in x out, the median of 9 after a warm-up)."""
    total = 0.0
    for (n_in, n_out), f in flops.items():
        x, w = torch.randn(rows, n_in), torch.randn(n_out, n_in)
        torch.nn.functional.linear(x, w)
        runs = []
        for _ in range(9):
            t0 = time.perf_counter()
            torch.nn.functional.linear(x, w)
            runs.append(time.perf_counter() - t0)
        total += f / (2 * rows * n_in * n_out / statistics.median(runs))
    return total


def _config(out: Path, args: argparse.Namespace, variant: str) -> StudyConfig:
    cfg = demo_config(out, show_progress=False)
    cfg.relations = None if args.relations == "all" else args.relations.split(",")
    cfg.sample, cfg.controls = args.sample, args.controls
    cfg.stack_rows, cfg.shared_prefix, prepacked.ENABLED = VARIANTS[variant]
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


def _timed(
    root: Path, args: argparse.Namespace, variant: str
) -> tuple[float, dict[tuple[int, int], int], pl.DataFrame]:
    """(seconds of the eval stages, their linear FLOPs per shape, every answer) of one run."""
    _clear_evals(root)
    LINEAR_FLOPS.clear()
    t0 = time.perf_counter()
    record = json.loads(run_study(_config(root, args, variant)).read_text())
    wall = time.perf_counter() - t0
    seconds = sum(record["seconds"].get(k, 0.0) for k in EVAL_STAGES)
    flops = dict(LINEAR_FLOPS)
    print(
        f"  {variant:>7}: eval stages {seconds:7.1f} s (whole call {wall:.1f} s), "
        f"linear layers {sum(flops.values()) / 1e12:.2f} TFLOP"
    )
    answers = [
        pl.read_parquet(f).select(*KEY, "generated").with_columns(file=pl.lit(f.name))
        for f in sorted((root / "evals").glob("*.parquet"))
        if not f.name.startswith("baseline.")
    ]
    return seconds, flops, pl.concat(answers).sort("file", *KEY)


def _compare(a: pl.DataFrame, b: pl.DataFrame) -> int:
    """Rows whose answers differ (printed); the two must hold the same rows."""
    if a.drop("generated").rows() != b.drop("generated").rows():
        raise SystemExit("the two runs wrote different eval rows")
    diff = a.with_columns(other=b["generated"]).filter(pl.col("generated") != pl.col("other"))
    for row in diff.iter_rows(named=True):
        print(f"  differs: {row}")
    return diff.height


def _baselines(root: Path) -> tuple[dict[bool, float], int, int]:
    """Seconds of the baseline answers of every prompt as before (no shared prefixes,
    `F.linear`) and as now, the prompts, and those whose answers differ (printed); the
    study's baseline is put back."""
    from warehouse.analysis.evaluate import baseline_path, run_eval

    base = baseline_path(root)
    kept = {f: f.read_bytes() for f in base.parent.glob("baseline.*")}
    seconds, answers = {}, {}
    try:
        for now in (False, True):
            t0 = time.perf_counter()
            prepacked.ENABLED = now
            cfg = EvalConfig(baseline=True, force=True, shared_prefix=now)
            path = run_eval(root, cfg, show_progress=False)
            seconds[now] = time.perf_counter() - t0
            answers[now] = pl.read_parquet(path).select("prompt_id", "generated")
    finally:
        prepacked.ENABLED = VARIANTS["now"][2]
        for f, data in kept.items():
            f.write_bytes(data)
    diff = answers[False].join(answers[True], on="prompt_id", suffix="_shared")
    diff = diff.filter(pl.col("generated") != pl.col("generated_shared"))
    for row in diff.iter_rows(named=True):
        print(f"  baseline differs: {row}")
    return seconds, answers[False].height, diff.height


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--relations", default="country_capital,country_currency,city_country")
    ap.add_argument("--sample", type=int, default=40)
    ap.add_argument("--controls", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--warehouse", type=Path, default=None)
    args = ap.parse_args()
    names = list(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.warehouse or Path(tmp) / "w"
        t0 = time.perf_counter()
        run_study(_config(root, args, "now"))
        print(f"study made in {time.perf_counter() - t0:.0f} s: {args.relations}")
        times: dict[str, list[float]] = {v: [] for v in names}
        answers: dict[str, pl.DataFrame] = {}
        flops: dict[str, dict[tuple[int, int], int]] = {}
        counting = torch.nn.modules.module.register_module_forward_pre_hook(_counted)
        try:
            for r in range(args.rounds):
                k = r % len(names)
                for variant in names[k:] + names[:k]:
                    seconds, flops[variant], answers[variant] = _timed(root, args, variant)
                    times[variant].append(seconds)
        finally:
            counting.remove()
            prepacked.ENABLED = VARIANTS["now"][2]
        rows = answers["before"].height
        differing = {v: _compare(answers["before"], answers[v]) for v in names[1:]}
        base_seconds, base_rows, base_differing = _baselines(root)
        if args.warehouse is None:
            shutil.rmtree(root)
    ratios = {v: [a / b for a, b in zip(times["before"], times[v], strict=True)] for v in names}
    for v in names[1:]:
        print(
            f"eval stages, before / {v}: rounds {', '.join(f'{x:.2f}x' for x in ratios[v])}"
            f" (median {statistics.median(ratios[v]):.2f}x); answers equal"
            f" {rows - differing[v]}/{rows}"
        )
    for v in names:  # the FLOPs of the eval stages are the same in every round
        median, total = statistics.median(times[v]), sum(flops[v].values())
        print(
            f"{v}: {total / 1e12:.2f} TFLOP in linear layers, {total / median / 1e9:.0f} GFLOP/s"
            f" over the eval stages; at the CPU's matrix-multiply rate they take"
            f" {_ceiling(flops[v]):.1f} s of its {median:.1f} s"
        )
    print(
        f"baseline of {base_rows} prompts: before {base_seconds[False]:.1f} s, now "
        f"{base_seconds[True]:.1f} s; answers equal {base_rows - base_differing}/{base_rows}"
    )
    if args.json:
        given = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        tflop = {v: sum(f.values()) / 1e12 for v, f in flops.items()}
        record = {"args": given, "seconds": times, "linear_tflop": tflop,
                  "ratios": ratios, "answers": rows, "differing": differing,
                  "baseline": {"seconds": base_seconds, "prompts": base_rows,
                               "differing": base_differing}}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
