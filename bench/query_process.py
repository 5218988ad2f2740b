"""Benchmark: the fixed costs of a query, and what running it in a killable child costs.

    python bench/query_process.py W            # any warehouse; --repeat 9 by default

Prints, for the shell (`warehouse query W SQL`, a fresh process each time):
- wall and CPU seconds (the process and the child it forks, from `wait4`'s rusage), median
  and best of `--repeat` runs, next to `warehouse --version` (Python + the CLI alone);
and for Python (`Warehouse.sql`), medians over `--repeat` interleaved calls:
- a small query in this process (`isolate=False`) vs in the worker process (the default),
- the worker's first start (the first isolated query of a process), in a fresh process.
A shared machine is noisy: the best run is the closest to an idle machine's figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SMALL = "select count(*) as n from prompts"


def shell(args: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + sys of the process and its children) seconds of each run."""
    walls, cpus = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - start)
        cpus.append(usage.ru_utime + usage.ru_stime)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{args} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return walls, cpus


def first_worker_start(w: Path) -> float:
    """Seconds of the first isolated query of a fresh process, less the same query in it
    in-process (so imports are not counted)."""
    code = (
        "import time; from warehouse.api import Warehouse; "
        f"w = Warehouse.open({str(w)!r}); w.sql({SMALL!r}, isolate=False); "
        f"t = time.perf_counter(); w.sql({SMALL!r}); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def per_query(w: Path, repeat: int) -> dict[str, float]:
    from warehouse.api import Warehouse

    wh = Warehouse.open(w)
    wh.sql(SMALL)  # start the worker
    times: dict[str, list[float]] = {"in-process": [], "worker": []}
    for _ in range(repeat):
        for name, isolate in (("in-process", False), ("worker", True)):
            t = time.perf_counter()
            wh.sql(SMALL, isolate=isolate)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("warehouse", type=Path)
    ap.add_argument("--repeat", type=int, default=9)
    a = ap.parse_args()
    cli = [sys.executable, "-m", "warehouse"]
    rows = {
        "warehouse --version": [*cli, "--version"],
        'warehouse query W "select 1"': [*cli, "query", str(a.warehouse), "select 1"],
        f'warehouse query W "{SMALL}"': [*cli, "query", str(a.warehouse), SMALL],
    }
    print(f"{'command':<60} {'wall med':>8} {'best':>6} {'CPU med':>8} {'best':>6}")
    for name, args in rows.items():
        walls, cpus = shell(args, a.repeat)
        print(
            f"{name:<60} {statistics.median(walls):8.3f} {min(walls):6.3f} "
            f"{statistics.median(cpus):8.3f} {min(cpus):6.3f}"
        )
    med = per_query(a.warehouse, a.repeat)
    print(f"\nWarehouse.sql({SMALL!r}), median of {a.repeat}:")
    for name, s in med.items():
        print(f"  {name:<11} {s * 1000:7.1f} ms")
    print(f"  worker / in-process: {med['worker'] / med['in-process']:.2f}x")
    print(f"first worker start (fresh process): {first_worker_start(a.warehouse):.3f} s")


if __name__ == "__main__":
    main()
