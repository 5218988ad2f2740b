"""Sharded ingest and eval, in this process or as Ray tasks (`--ray ADDRESS`).

    sharded_ingest(cfg, shards=8, ray_address="auto")      # -> the merged manifest
    sharded_eval("W", EvalConfig(...), shards=8, ray_address="auto")   # -> the results file

Each shard is an ordinary `ingest --shard i/n` (a part warehouse in a hidden sibling folder,
`.<out>.parts/i-of-n`) or `eval --shard i/n` (answers under `W/evals/parts/`); the driver
then merges the parts (store/merge.py) or joins the answers (analysis/eval_shards.py), so the
result equals a single-process run byte for byte. With Ray, a task is scheduled per shard:
one GPU each when the cluster has GPUs (the model runs on `cuda`), else one CPU each. Tasks
report prompts done to a counter actor that the driver's progress bar sums; a task that
fails on a lost worker, an OSError or a RuntimeError (e.g. CUDA) is retried, and an ingest
part resumes where it stopped. Workers read and write the warehouse by path, so on a
multi-node cluster the output must be on a filesystem every node mounts at the same path.

Ray is optional: `pip install 'relation-warehouse[ray]'`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warehouse.ingest.run import IngestConfig
from warehouse.store.errors import WarehouseError

if TYPE_CHECKING:
    # Not imported at run time: an ingest never needs the evaluator's modules (~25 ms of
    # its start, measured in fresh processes), and an eval imports them itself.
    from warehouse.analysis.evaluate import EvalConfig
    from warehouse.store.manifest import Manifest

LOCAL_CPUS = 2  # a local Ray cluster started here stays this small
MAX_RETRIES = 3


# ------------------------------------------------------------------------------ dispatch


@dataclass(frozen=True)
class Placement:
    """Where an ingest or eval runs: whole in this process (the default), one slice of it
    (`--shard i/n`), or every slice as Ray tasks (`--ray ADDRESS`, `--shards N`)."""

    shard: tuple[int, int] | None = None
    ray: str | None = None
    shards: int | None = None

    def __post_init__(self) -> None:
        if self.shards is not None and self.ray is None:
            raise WarehouseError("--shards goes with --ray; for one slice use --shard i/n")
        if self.ray is not None and self.shard is not None:
            raise WarehouseError("--ray runs every shard itself; leave out --shard")


def dispatch(
    cfg: IngestConfig | EvalConfig,
    where: Placement = Placement(),
    *,
    root: str | Path | None = None,
    show_progress: bool = True,
    loaded: Any = None,
) -> Manifest | Path | None:
    """Run an ingest (`IngestConfig`) or an eval of the warehouse `root` (`EvalConfig`) where
    `where` says; the CLI and the study both come here. An ingest returns its manifest (the
    part's, for one shard); an eval its results file (the baseline's without a selection),
    or None from a shard whose part did not complete the set. `loaded` (a model already in
    memory) serves an ingest or an eval in this process."""
    if isinstance(cfg, IngestConfig):
        from warehouse.ingest.run import ingest

        if where.ray is not None:
            return sharded_ingest(
                cfg, where.shards, ray_address=where.ray, show_progress=show_progress
            )
        if where.shard is not None:
            cfg = replace(cfg, shard=where.shard)
        return ingest(cfg, show_progress=show_progress, loaded=loaded)
    if root is None:
        raise TypeError("an eval needs the warehouse: dispatch(cfg, where, root=...)")
    from warehouse.analysis.eval_shards import eval_shard
    from warehouse.analysis.evaluate import run_eval

    if where.ray is not None:
        return sharded_eval(
            root, cfg, where.shards, ray_address=where.ray, show_progress=show_progress
        )
    if where.shard is not None:
        return eval_shard(root, cfg, where.shard, loaded=loaded, show_progress=show_progress)
    path = run_eval(root, cfg, show_progress, loaded=loaded)
    assert isinstance(path, Path)
    return path


# ------------------------------------------------------------------------------ ingest


def parts_folder(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.parts"


def sharded_ingest(
    cfg: IngestConfig,
    shards: int | None = None,
    *,
    ray_address: str | None = None,
    show_progress: bool = True,
) -> Manifest:
    """Ingest `cfg` as `shards` parts (in this process, or as Ray tasks when `ray_address`
    is given: "local", "auto" or a cluster address), then merge them into `cfg.out`.
    Returns the merged manifest; a re-run resumes unfinished parts."""
    from warehouse.ingest.datasets import load_dataset
    from warehouse.ingest.run import select_prompts
    from warehouse.store.manifest import is_warehouse, load_manifest
    from warehouse.store.merge import merge

    if cfg.shard is not None:
        raise WarehouseError("a sharded ingest runs every shard itself; leave out --shard")
    out = Path(cfg.out)
    if is_warehouse(out):
        m = load_manifest(out)
        if m.complete and m.merged_from is not None:
            return m
        raise WarehouseError(f"{out} already holds a warehouse; choose a new --out")
    if out.exists() and any(out.iterdir()):
        raise WarehouseError(f"{out} exists and is not empty; choose a new --out")
    total = len(select_prompts(cfg, load_dataset(cfg.dataset)))
    parts = parts_folder(out)
    with _Executor(ray_address, shards) as ex:
        n = ex.shards
        jobs = [
            (i, replace(cfg, out=parts / f"{i}-of-{n}", shard=(i, n), device=ex.device(cfg.device)))
            for i in range(1, n + 1)
        ]
        ex.run("ingest", _ingest_part, jobs, total, show_progress)
    m = merge([parts / f"{i}-of-{n}" for i in range(1, n + 1)], out, show_progress=show_progress)
    shutil.rmtree(parts, ignore_errors=True)
    return m


def _ingest_part(cfg: IngestConfig, advance: Callable[[int], None]) -> int:
    from warehouse.ingest.run import ingest

    return ingest(cfg, show_progress=False, on_progress=advance).counts.prompts


# ------------------------------------------------------------------------------ eval


def sharded_eval(
    root: str | Path,
    cfg: EvalConfig,
    shards: int | None = None,
    *,
    ray_address: str | None = None,
    show_progress: bool = True,
) -> Path:
    """Evaluate `cfg` on the warehouse `root` as `shards` slices (in this process, or as Ray
    tasks) and join them; returns the results file (the baseline's without a selection)."""
    from warehouse.analysis.eval_shards import Request, join_eval

    root = Path(root)
    with _Executor(ray_address, shards) as ex:
        n = ex.shards
        req = Request(root, cfg, n)
        total = req.prompts.height if req.key.options["baseline_needed"] else 0
        if req.key.options["results_needed"] and req.chosen is not None:
            total += req.chosen.height * len(req.conds)
        device = ex.device(cfg.device)
        jobs = [(i, (root, replace(cfg, device=device), (i, n))) for i in range(1, n + 1)]
        ex.run("eval", _eval_part, jobs, total, show_progress)
    path = join_eval(root, cfg, n)
    if path is None:
        raise WarehouseError(f"a shard's answers are missing under {root}/evals/parts; re-run")
    return path


def _eval_part(args: tuple, advance: Callable[[int], None]) -> int:
    from warehouse.analysis.eval_shards import eval_shard

    root, cfg, shard = args
    eval_shard(root, cfg, shard, advance=advance, join=False)
    return shard[0]


# ------------------------------------------------------------------------------ executors


class _Executor:
    """Runs `fn(job, advance)` for every job: in this process, or one Ray task per job."""

    def __init__(self, address: str | None, shards: int | None) -> None:
        if shards is not None and shards < 1:
            raise WarehouseError(f"--shards must be at least 1, not {shards}")
        self.address = address
        self.ray: Any = None
        self.started = False
        self.gpus = 0
        self.shards = shards or 1
        if address is not None:
            self.ray = _import_ray()
            if not self.ray.is_initialized():
                self._init(address)
                self.started = True
            res = self.ray.cluster_resources()
            self.gpus = int(res.get("GPU", 0))
            self.shards = shards or max(self.gpus or int(res.get("CPU", 1)), 1)

    def _init(self, address: str) -> None:
        ray = self.ray
        try:
            if address in ("", "local"):
                ray.init(num_cpus=LOCAL_CPUS, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise WarehouseError(f"cannot start or reach Ray at {address!r}: {e}") from None

    def __enter__(self) -> _Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.ray.shutdown()

    def device(self, asked: str) -> str:
        """One GPU per task where the cluster has GPUs; else what was asked (cpu)."""
        return "cuda" if self.gpus else asked

    def run(self, what: str, fn: Callable, jobs: list[tuple[int, Any]], total: int, show: bool):
        with _Bar(what, total, len(jobs), show) as bar:
            if self.ray is None:
                for _, job in jobs:
                    fn(job, bar.advance)
                    bar.shard_done()
                return
            self._run_ray(fn, jobs, bar)

    def _run_ray(self, fn: Callable, jobs: list[tuple[int, Any]], bar: _Bar) -> None:
        ray = self.ray
        counter = ray.remote(num_cpus=0)(_Counter).remote()
        task = ray.remote(_task).options(
            num_gpus=1 if self.gpus else 0,
            num_cpus=0 if self.gpus else 1,
            max_retries=MAX_RETRIES,
            retry_exceptions=[OSError, RuntimeError],
        )
        threads = None if self.gpus else 1
        cwd = os.getcwd()
        refs = {task.remote(fn, job, counter, threads, cwd): i for i, job in jobs}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                for ref in done:
                    try:
                        ray.get(ref)
                    except Exception as e:  # a RayTaskError wraps the task's own error
                        cause = getattr(e, "cause", None) or e
                        if isinstance(cause, WarehouseError):
                            raise cause from None
                        raise WarehouseError(
                            f"shard {refs[ref]}/{len(jobs)} failed after {MAX_RETRIES} retries: "
                            f"{type(cause).__name__}: {cause}; re-run to resume"
                        ) from None
                    bar.shard_done()
                bar.set(ray.get(counter.get.remote()))
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def _task(fn: Callable, job: Any, counter: Any, threads: int | None, cwd: str) -> Any:
    """A Ray task: run one shard, telling the driver's counter about progress."""
    if os.path.isdir(cwd):
        # Relative paths (--out, --model, --dataset) mean what they meant to the driver, and
        # the manifest records them as given, like a single-process run.
        os.chdir(cwd)
    if threads is not None:
        import torch

        # CPU float results depend on the BLAS thread count: a CPU task uses exactly the
        # CPUs it reserved (1), so its values equal a one-thread single-process run.
        torch.set_num_threads(threads)
    return fn(job, lambda n: counter.add.remote(n))


class _Counter:
    """A Ray actor that sums the prompts every task has done."""

    def __init__(self) -> None:
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n

    def get(self) -> int:
        return self.n


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise WarehouseError(
            "--ray needs Ray: pip install 'relation-warehouse[ray]' (or ray)"
        ) from None
    return ray


class _Bar:
    """The driver's progress line: prompts done over every shard, and shards finished."""

    def __init__(self, what: str, total: int, shards: int, enabled: bool) -> None:
        from warehouse.store.progress import Progress

        self.done_shards, self.shards = 0, shards
        self.line = Progress(what, max(total, 1), unit="prompts", enabled=enabled)

    def _shards(self) -> str:
        return f"{self.done_shards}/{self.shards} shards done"

    def __enter__(self) -> _Bar:
        self.line.__enter__()
        self.line.advance(0, info=self._shards())
        return self

    def __exit__(self, *exc: object) -> None:
        self.line.__exit__(*exc)

    def advance(self, n: int) -> None:
        self.line.advance(n, info=self._shards())

    def set(self, n: int) -> None:
        # a retried task counts its redone prompts again: never show more than the total
        self.line.set(n, info=self._shards())

    def shard_done(self) -> None:
        self.done_shards += 1
        self.line.advance(0, info=self._shards())
