"""Benchmark: rank-based selectivity vs the per-neuron scikit-learn loop.

The reference is the ml-selfcond style loop: one `average_precision_score` call per
neuron per relation. It is timed on a random sample of neurons and extrapolated to all of
them; `selectivity` runs on every neuron, streamed in column blocks like a store read.

    python bench/stats.py                       # synthetic 2,000 x 46,080 float16, 12 relations
    python bench/stats.py --responses R.npy --labels Y.npy
    python bench/stats.py --warehouse W [--split identify]   # a warehouse's mean responses
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score

from warehouse.analysis.selectivity import selectivity, selectivity_sampled


@dataclass(frozen=True)
class BenchConfig:
    prompts: int = 2000
    neurons: int = 46080  # SmolLM2-135M ffn.act: 30 layers x 1,536
    relations: int = 12
    sample_neurons: int = 200
    block_size: int = 2048
    threads: int = 2
    seed: int = 0
    repeats: int = 1  # best of N for both timings: a shared 2-core box is noisy


def synthetic(cfg: BenchConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pooled-response-like float16 data: noise plus a relation shift on a few neurons."""
    rng = np.random.default_rng(cfg.seed)
    y = rng.integers(0, cfg.relations, cfg.prompts)
    x = np.empty((cfg.prompts, cfg.neurons), dtype=np.float16)
    step = 4096  # generate in slices so float64 noise never holds the whole array
    for c in range(0, cfg.neurons, step):
        block = rng.standard_normal((cfg.prompts, min(step, cfg.neurons - c)), np.float32)
        # Half the neurons get a shift for one relation so APs are not all ~1/R.
        rel = rng.integers(0, cfg.relations, block.shape[1])
        shifted = rng.random(block.shape[1]) < 0.5
        block += 0.5 * ((y[:, None] == rel[None, :]) & shifted[None, :])
        x[:, c : c + block.shape[1]] = block
    return x, y


def rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MiB; getrusage's peak as a fallback."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak_rss() -> bool:
    """Reset VmHWM so the peak covers the statistics only, not the data generation."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def time_sklearn(
    x: np.ndarray, y: np.ndarray, relations: int, neurons: np.ndarray
) -> tuple[float, np.ndarray]:
    """Seconds for the loop over the sampled neurons, and its (relations, sample) APs."""
    ap = np.empty((relations, len(neurons)))
    t0 = time.perf_counter()
    for i, j in enumerate(neurons):
        scores = x[:, j].astype(np.float64)
        for r in range(relations):
            ap[r, i] = average_precision_score(y == r, scores)
    return time.perf_counter() - t0, ap


def time_fast(x: np.ndarray, y: np.ndarray, cfg: BenchConfig) -> tuple[float, np.ndarray]:
    """Seconds for `selectivity` over every neuron, and the full (relations, neurons) AP."""
    ap = np.empty((cfg.relations, x.shape[1]))
    blocks = ((c, x[:, c : c + cfg.block_size]) for c in range(0, x.shape[1], cfg.block_size))
    t0 = time.perf_counter()
    for offset, res in selectivity(blocks, y, cfg.relations, threads=cfg.threads):
        ap[:, offset : offset + res.n_neurons] = res.ap
    return time.perf_counter() - t0, ap


def from_warehouse(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(prompts, layers x units) float16 mean responses of `split` and relation labels."""
    from pathlib import Path

    import polars as pl
    import zarr

    from warehouse.store.manifest import Manifest

    manifest = Manifest.load(root)
    key = next(k for k in manifest.arrays if k.startswith("responses/") and k.endswith("/mean"))
    arr = zarr.open_array(Path(root) / "responses.zarr" / key.split("/", 1)[1], mode="r")
    prompts = pl.read_parquet(Path(root) / "prompts.parquet").sort("prompt_row")
    keep = prompts["split"] == split if split != "all" else pl.Series([True] * prompts.height)
    rows = prompts.filter(keep)["prompt_row"].to_numpy()
    x = arr[:][rows].reshape(len(rows), -1)
    codes = prompts.filter(keep)["relation"].cast(pl.Categorical).to_physical().to_numpy()
    _, y = np.unique(codes, return_inverse=True)
    return np.ascontiguousarray(x), y.astype(np.int64)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", help=".npy (prompts, neurons) pooled responses")
    parser.add_argument("--labels", help=".npy (prompts,) integer relation labels")
    parser.add_argument("--warehouse", help="a warehouse: its first site's mean responses")
    parser.add_argument("--split", default="identify", help="with --warehouse: identify|all")
    for field in BenchConfig.__dataclass_fields__.values():
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=int, default=field.default)
    parser.add_argument(
        "--sampled-ratio",
        type=float,
        default=4.0,
        help="also time the paper's sampled-negatives mode (0: skip)",
    )
    return parser


def _data(args, cfg: BenchConfig) -> tuple[np.ndarray, np.ndarray, BenchConfig]:
    """The responses and labels: given ones (and the config resized to them) or synthetic."""
    if not (args.responses or args.warehouse):
        x, y = synthetic(cfg)
        return x, y, cfg
    if args.warehouse:
        x, y = from_warehouse(args.warehouse, args.split)
    else:
        x = np.load(args.responses, mmap_mode="r")
        y = np.load(args.labels).astype(np.int64)
    shape = {"prompts": x.shape[0], "neurons": x.shape[1], "relations": int(y.max()) + 1}
    return np.ascontiguousarray(x), y, BenchConfig(**{**cfg.__dict__, **shape})


def _compare(x: np.ndarray, y: np.ndarray, cfg: BenchConfig) -> None:
    """scikit-learn on a sample of neurons vs the kernel on all, best of `repeats` each."""
    rng = np.random.default_rng(cfg.seed + 1)
    sample = np.sort(rng.choice(cfg.neurons, min(cfg.sample_neurons, cfg.neurons), False))
    t_sk, ap_sk = min(
        (time_sklearn(x, y, cfg.relations, sample) for _ in range(cfg.repeats)),
        key=lambda t: t[0],
    )
    t_sk_all = t_sk * cfg.neurons / len(sample)
    t_fast, ap_fast = min((time_fast(x, y, cfg) for _ in range(cfg.repeats)), key=lambda t: t[0])
    delta = np.abs(ap_fast[:, sample] - ap_sk).max()
    print(
        f"sklearn loop   : {t_sk:8.2f} s for {len(sample)} neurons "
        f"-> {t_sk_all:8.1f} s extrapolated to {cfg.neurons:,}"
    )
    print(
        f"selectivity    : {t_fast:8.2f} s for all {cfg.neurons:,} neurons "
        f"(AP, AUROC, moments, SMD)"
    )
    print(f"speed-up       : {t_sk_all / t_fast:8.1f} x   (target >= 100 x)")
    print(f"max |dAP|      : {delta:.3e} over {len(sample)} x {cfg.relations} sampled pairs")


def main() -> None:
    args = _parser().parse_args()
    cfg = BenchConfig(**{k: getattr(args, k) for k in BenchConfig.__dataclass_fields__})
    x, y, cfg = _data(args, cfg)
    rss_data = rss_mib("VmRSS")
    peak_reset = reset_peak_rss()
    print(
        f"data: {cfg.prompts:,} prompts x {cfg.neurons:,} neurons {x.dtype}, "
        f"{cfg.relations} relations; threads={cfg.threads}, block={cfg.block_size}"
    )
    _compare(x, y, cfg)
    if args.sampled_ratio > 0:
        t0 = time.perf_counter()
        selectivity_sampled(x, y, cfg.relations, args.sampled_ratio, cfg.seed,
                            block_size=cfg.block_size, threads=cfg.threads)  # fmt: skip
        print(
            f"sampled mode   : {time.perf_counter() - t0:8.2f} s "
            f"(negatives = {args.sampled_ratio:g} x positives per relation)"
        )
    since = "since the data was loaded" if peak_reset else "including data generation"
    print(
        f"peak RSS       : {rss_mib('VmHWM'):8.0f} MiB {since} "
        f"(RSS with the data loaded: {rss_data:.0f} MiB; data {x.nbytes / 2**20:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
