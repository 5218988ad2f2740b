"""Fixed costs of the commands: what each spends before its work starts, in fresh processes.

    python bench/startup.py [--model smollm2-135m] [--rounds 5] [--baseline OTHER_PYTHON]

Three figures per interpreter, each a new process started from the shell's point of view:
- ingest: `warehouse ingest --max-prompts 300` until its first batch starts (the first call
  of `Capturer.run`, where the child stops);
- query: `warehouse query W "select 1"` to its exit; query-late: the same through
  `python -m warehouse.cli`, which forks the query's child only after parsing (the console
  script forks it first, so that the child's imports overlap the CLI's);
- eval: `warehouse eval W` until its first generation starts (the first call of `answer`);
- imports: a process that only imports torch and transformers' Llama model class (the
  embedded model's) the way the `warehouse` of that interpreter does before a model command
  (`warehouse.launch.preload`: the garbage collector off, then what was imported frozen;
  plainly where it has no `preload`) and exits: the floor under the ingest and eval
  figures, which no code of this package's can go below while it runs models through
  transformers; imports-plain: the same imports with the collector as Python starts.

Wall is measured here, from the start of the process; CPU is the process's user + system
time with its children (the query's forked child included). `--baseline` names another
Python whose `warehouse` is another checkout (say a venv of the main branch): both run in
the same rounds, interleaved, so the ratio holds under the same load. The embedded model
must be cached already (`warehouse ingest` converts it once); W is a 40-prompt pooled
warehouse made here with this checkout.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# What the console script runs first for a model command (a checkout before it: nothing).
PRELOAD = """
try:
    from warehouse.launch import preload
except ImportError:
    pass
else:
    preload()
"""
# Runs a command in-process and stops it at the first call of a function: a module's
# attribute (dotted) is wrapped before the command imports it from there. The module is
# imported after what `warehouse.launch` imports first for a model command (`preload`), as
# the command itself would import it.
CHILD = (
    PRELOAD
    + """
import importlib, os, runpy, sys
module, attr, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
owner = importlib.import_module(module)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)

def first_call(*args, **kwargs):
    sys.stdout.flush()
    os._exit(0)

setattr(owner, name, first_call)
sys.argv = ["warehouse", *argv]
runpy.run_module("warehouse", run_name="__main__")
os._exit(3)  # the command ended without reaching the marked call
"""
)

# os._exit: the other rows stop the same way, without the interpreter's teardown
IMPORTS_PLAIN = """
import os, torch
from transformers.models.llama.modeling_llama import LlamaForCausalLM
os._exit(0)
"""
IMPORTS = PRELOAD + IMPORTS_PLAIN


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one command with its children; it must exit 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def commands(python: str, model: str, warehouse: Path, scratch: Path) -> dict[str, list[str]]:
    out = str(scratch / f"ingest-{time.monotonic_ns()}")
    ingest = ["ingest", "--out", out, "--model", model, "--max-prompts", "300", "--quiet"]
    evaluate = ["eval", str(warehouse), "--split", "all", "--sample", "1", "--force", "--quiet"]
    return {
        "ingest": [python, "-c", CHILD, "warehouse.ingest.capture", "Capturer.run", *ingest],
        "query": [python, "-m", "warehouse", "query", str(warehouse), "select 1"],
        # the CLI module alone: its child forks after the arguments are parsed, as it did
        # before the console script forked it first (`warehouse.launch`)
        "query-late": [python, "-m", "warehouse.cli", "query", str(warehouse), "select 1"],
        "eval": [python, "-c", CHILD, "warehouse.analysis.evaluate", "answer", *evaluate],
        "imports": [python, "-c", IMPORTS],
        "imports-plain": [python, "-c", IMPORTS_PLAIN],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", help="another Python, whose `warehouse` is the baseline")
    args = ap.parse_args()
    pythons = {"this": sys.executable} | ({"baseline": args.baseline} if args.baseline else {})
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        warehouse = scratch / "w40"
        make = [sys.executable, "-m", "warehouse", "ingest", "--out", str(warehouse)]
        timed([*make, "--model", args.model, "--max-prompts", "40", "--capture", "pooled"])
        for _ in range(args.rounds):
            for who, python in pythons.items():
                for what, cmd in commands(python, args.model, warehouse, scratch).items():
                    times.setdefault((who, what), []).append(timed(cmd))
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)  rounds: {args.rounds}  model: {args.model}")
    print(f"{'':11s}" + "".join(f"{w + ' wall / CPU s (median, best)':>40s}" for w in pythons))
    for what in ("ingest", "query", "query-late", "eval", "imports", "imports-plain"):
        cells = []
        for who in pythons:
            walls, cpus = zip(*times[(who, what)], strict=True)
            cells.append(
                f"{statistics.median(walls):6.2f} / {statistics.median(cpus):5.2f}  "
                f"({min(walls):5.2f} / {min(cpus):5.2f})"
            )
        print(f"{what:11s}" + "".join(f"{c:>40s}" for c in cells))


if __name__ == "__main__":
    main()
