"""Per-token capture side by side with its peers: `warehouse ingest` against hand-written
PyTorch hooks writing .npy files, nnsight, and TransformerLens's TransformerBridge.

    python bench/peers.py [--relations country_capital,country_currency] [--languages en]
                          [--batch-size 32] [--rounds 9] [--seed 0] [--model smollm2-135m]
                          [--device cpu] [--ways warehouse,hooks,nnsight,transformer-lens]

The peers are optional; nothing else in the project needs them, the tests included. They
install beside the project's torch and transformers without replacing either:

    pip install nnsight transformer-lens

A peer that is not installed is skipped with one printed line.

Every way captures what a default ingest stores per token: the site `ffn.act` (the input of
each layer's `mlp.down_proj`, `mlp.hook_post` in TransformerLens) at every layer, for every
token, as float16 (tokens, layers, units), and writes it to disk:

- warehouse: `ingest(capture="tokens")`, the default capture, into a new warehouse: the
  per-token array compressed in Zarr shards, the pooled responses (mean, max, last), the
  prompts and tokens tables, the manifest and the checksums. Its forward pass stops after the
  last captured site (ingest/capture.py).
- hooks: a forward pre-hook on each layer's `mlp.down_proj`, around `model.base_model` (no
  LM head); each batch's tensors cast to float16, stacked and written with `np.save`.
- nnsight: `TransformersModel(model).trace(...)`, `.input.save()` of each layer's
  `mlp.down_proj`, then `tracer.stop()`, so the LM head is not run; written as hooks does.
- transformer-lens: `TransformerBridge.boot_transformers(hf_model=model)`, then
  `run_with_cache` with a names filter on `blocks.{layer}.mlp.hook_post` and
  `return_type=None`; written as hooks does. Its `stop_at_layer` stops *before* a block, so
  a run that captures the last layer also computes the final norm and the LM head.

Every way runs ingest's batches over the same prompts (ordered by length, at most
--batch-size prompts of one length per batch, so nothing is padded), each on its own copy of
the model, in this one process with the same torch threads. An untimed first round runs every
way, checks each peer's files against the warehouse's stored array, bit for bit (with packed
prefixes and packed weights, the defaults, the warehouse's values differ in the last float16
bit in about 1.6 % of places; the check prints the largest difference), and deletes them.
Then each round runs every way once, in a random order (seeded), and deletes what it wrote
once timed; a peer's time over the warehouse's time in the same round is one paired ratio
(above 1: the warehouse is faster). The figure is the median of the rounds' ratios with a
distribution-free 95 % interval for it (`median_interval`); 9 rounds give the 2nd smallest
and 2nd largest ratio, 96.1 % coverage, and fewer than 6 rounds give no 95 % interval.

The process caps oneDNN's kernel cache as `warehouse ingest` does
(`warehouse.launch.limit_onednn_cache`), so the warehouse's rounds compile the kernels a
single ingest compiles; `ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024` in the environment measures
oneDNN's default instead. The peers run `F.linear`, which that cache does not serve.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binom

from warehouse.api import Warehouse
from warehouse.ingest.batching import pad_batch
from warehouse.ingest.datasets import load_dataset
from warehouse.ingest.models import LoadedModel, load_model
from warehouse.ingest.run import (
    IngestConfig,
    batch_ranges,
    ingest,
    order_by_length,
    select_prompts,
)
from warehouse.launch import limit_onednn_cache

SITE = "ffn.act"
WAYS = ("warehouse", "hooks", "nnsight", "transformer-lens")
# The import name each peer needs.
PEER_PACKAGES = {"nnsight": "nnsight", "transformer-lens": "transformer_lens"}


@dataclass(frozen=True)
class Interval:
    """The median of n values and a distribution-free interval for the median they are drawn
    from: the k-th smallest and k-th largest value, k the largest with P(B < k) <= (1 - c)/2
    for B ~ Binomial(n, 1/2), as `scipy.stats.quantile_test(...).confidence_interval()`."""

    median: float
    low: float | None  # None: too few values for the confidence asked
    high: float | None
    coverage: float | None  # the interval's exact coverage (continuous values), >= confidence


def median_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    # P(B <= j) rises with j: the j with P(B <= j) <= alpha are 0 .. k - 1.
    k = int(np.count_nonzero(binom.cdf(np.arange(n), n, 0.5) <= (1 - confidence) / 2))
    if k == 0:
        return Interval(float(np.median(x)), None, None, None)
    coverage = float(1 - 2 * binom.cdf(k - 1, n, 0.5))
    return Interval(float(np.median(x)), float(x[k - 1]), float(x[n - k]), coverage)


@dataclass(frozen=True)
class Batches:
    """The prompts' token ids in ingest's row order and ingest's batches over them."""

    ids: list[list[int]]
    ranges: list[tuple[int, int]]
    pad_id: int
    device: torch.device

    @property
    def n_tokens(self) -> int:
        return sum(len(x) for x in self.ids)

    def inputs(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch b's input_ids and attention_mask (all ones: a batch holds one length)."""
        s, e = self.ranges[b]
        x, mask, _ = pad_batch(self.ids[s:e], self.pad_id, "right", self.device)
        return x, mask


def _config(out: Path, args: argparse.Namespace) -> IngestConfig:
    return IngestConfig(
        out=out,
        model=args.model,
        device=args.device,
        relations=args.relations.split(","),
        languages=args.languages.split(","),
        batch_size=args.batch_size,
        capture="tokens",
        sites=SITE,
    )


def plan_batches(loaded: LoadedModel, args: argparse.Namespace) -> Batches:
    cfg = _config(Path("."), args)
    _, encoded = order_by_length(loaded.tokenizer, select_prompts(cfg, load_dataset(None)))
    ranges = batch_ranges(np.array([len(x) for x in encoded.ids]), args.batch_size)
    return Batches(encoded.ids, ranges, loaded.tokenizer.pad_token_id, loaded.device)


def save_batch(out: Path, b: int, per_layer: Sequence[torch.Tensor]) -> None:
    """A peer's batch: per-layer (batch, seq, units) tensors as one (tokens, layers, units)
    float16 .npy file, rows in prompt order as the warehouse stores them."""
    x = torch.stack([t.to(torch.float16) for t in per_layer], 2)
    np.save(out / f"{b:05d}.npy", x.flatten(0, 1).cpu().numpy())


def read_npy(out: Path) -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted(out.glob("*.npy"))])


def read_warehouse(out: Path) -> np.ndarray:
    return np.asarray(Warehouse.open(out).array(SITE).values)


@dataclass(frozen=True)
class Way:
    name: str
    run: Callable[[Path], None]  # captures every batch and writes it under a new folder
    read: Callable[[Path], np.ndarray]  # what it wrote, (tokens, layers, units) float16


def warehouse_way(loaded: LoadedModel, args: argparse.Namespace) -> Way:
    def run(out: Path) -> None:
        ingest(_config(out, args), show_progress=False, loaded=loaded)

    return Way("warehouse", run, read_warehouse)


def hooks_way(loaded: LoadedModel, batches: Batches) -> Way:
    backbone = loaded.model.base_model
    modules = [layer.mlp.down_proj for layer in backbone.layers]

    def run(out: Path) -> None:
        out.mkdir()
        got: list[torch.Tensor] = []
        handles = [m.register_forward_pre_hook(lambda _m, a: got.append(a[0])) for m in modules]
        try:
            for b in range(len(batches.ranges)):
                x, mask = batches.inputs(b)
                backbone(input_ids=x, attention_mask=mask, use_cache=False)
                save_batch(out, b, got)
                got.clear()
        finally:
            for h in handles:
                h.remove()

    return Way("hooks", run, read_npy)


def nnsight_way(loaded: LoadedModel, batches: Batches) -> Way:
    from nnsight.modeling.transformers import TransformersModel

    lm = TransformersModel(loaded.model, task="text-generation", tokenizer=loaded.tokenizer)
    n_layers = loaded.n_layers

    def run(out: Path) -> None:
        out.mkdir()
        for b in range(len(batches.ranges)):
            x, mask = batches.inputs(b)
            got = []
            # nnsight runs this block's source in its own frame: a loop, not a comprehension.
            with lm.trace(x, attention_mask=mask) as tracer:
                for i in range(n_layers):
                    got.append(lm.model.layers[i].mlp.down_proj.input.save())
                tracer.stop()
            save_batch(out, b, got)

    return Way("nnsight", run, read_npy)


def transformer_lens_way(loaded: LoadedModel, batches: Batches) -> Way:
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        loaded.source, hf_model=loaded.model, tokenizer=loaded.tokenizer, device=str(loaded.device)
    )
    names = [f"blocks.{i}.mlp.hook_post" for i in range(loaded.n_layers)]
    wanted = set(names)

    def run(out: Path) -> None:
        out.mkdir()
        for b in range(len(batches.ranges)):
            x, mask = batches.inputs(b)
            _, cache = bridge.run_with_cache(
                x, attention_mask=mask, names_filter=wanted.__contains__, return_type=None
            )
            save_batch(out, b, [cache[n] for n in names])

    return Way("transformer-lens", run, read_npy)


def build_ways(args: argparse.Namespace, loaded: LoadedModel, batches: Batches) -> list[Way]:
    """The ways asked for, each peer on its own copy of the model; a missing peer is skipped
    with one printed line."""
    ways = []
    for name in args.ways.split(","):
        if name not in WAYS:
            raise SystemExit(f"unknown way {name!r}; choose from {', '.join(WAYS)}")
        package = PEER_PACKAGES.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            print(f"{name:<17} skipped: {package} is not installed (pip install {name})")
            continue
        if name == "warehouse":
            ways.append(warehouse_way(loaded, args))
            continue
        own = load_model(args.model, device=args.device)  # peers never share the weights
        build = {"hooks": hooks_way, "nnsight": nnsight_way}.get(name, transformer_lens_way)
        ways.append(build(own, batches))
    return ways


def check_values(ways: list[Way], d: Path) -> dict[str, str]:
    """Run every way once (untimed) and compare what each peer wrote with the warehouse's
    stored values: "bit-identical", or the largest absolute difference; with the bytes each
    way wrote (all its files) against the raw float16 values."""
    for way in ways:
        way.run(d / way.name)
    found: dict[str, str] = {}
    ref = ways[0].read(d / ways[0].name) if ways[0].name == "warehouse" else None
    for way in ways:
        got = way.read(d / way.name)
        if ref is None or way.name == "warehouse":
            found[way.name] = f"{got.shape} {got.dtype}"
        elif got.shape != ref.shape or got.dtype != ref.dtype:
            found[way.name] = f"shape/dtype {got.shape} {got.dtype} != {ref.shape} {ref.dtype}"
        elif np.array_equal(got.view(np.uint16), ref.view(np.uint16)):
            found[way.name] = "bit-identical to the warehouse"
        else:
            diff = np.abs(got.astype(np.float32) - ref.astype(np.float32))
            found[way.name] = f"differs: max |diff| {np.nanmax(diff):.3g}, {np.mean(diff > 0):.2%}"
        size = sum(p.stat().st_size for p in (d / way.name).rglob("*") if p.is_file())
        found[way.name] += f"; {size / 1e6:.0f} MB on disk, {size / got.nbytes:.2f} of raw float16"
        shutil.rmtree(d / way.name)
    return found


@dataclass
class Times:
    """One way's seconds in each round: wall clock, and this process's CPU (every thread)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def timed_rounds(ways: list[Way], rounds: int, seed: int, d: Path) -> dict[str, Times]:
    """Each way's times in each round; every round runs the ways in a random order."""
    rng = np.random.default_rng(seed)
    times = {w.name: Times() for w in ways}
    for r in range(rounds):
        for i in rng.permutation(len(ways)):
            way = ways[i]
            out = d / f"{way.name}-{r}"
            t0, c0 = time.perf_counter(), time.process_time()
            way.run(out)
            times[way.name].wall.append(time.perf_counter() - t0)
            times[way.name].cpu.append(time.process_time() - c0)
            shutil.rmtree(out)
        done = ", ".join(f"{k} {t.wall[-1]:.2f} s" for k, t in times.items())
        print(f"round {r + 1}/{rounds}: {done}", flush=True)  # a run takes minutes
    return times


def _fmt(iv: Interval) -> str:
    if iv.low is None:
        return f"{iv.median:.3f}x (too few rounds for a 95 % interval)"
    return f"{iv.median:.3f}x [{iv.low:.3f}, {iv.high:.3f}] ({iv.coverage:.1%})"


def paired(times: dict[str, Times], peer: str, clock: str) -> Interval:
    """The peer's time over the warehouse's in each round: median and 95 % interval."""
    wh = np.array(getattr(times["warehouse"], clock))
    return median_interval(np.array(getattr(times[peer], clock)) / wh)


def report(args: argparse.Namespace, batches: Batches, times: dict, values: dict) -> None:
    n = batches.n_tokens
    print(
        f"prompts {len(batches.ids)}, tokens {n}, batches {len(batches.ranges)} of <= "
        f"{args.batch_size}, torch threads {torch.get_num_threads()}, relations "
        f"{args.relations}, languages {args.languages}, model {args.model}, device "
        f"{args.device}, rounds {args.rounds}, seed {args.seed}"
    )
    print("way               tok/s: median  fastest  per CPU-s | warehouse / way: wall; CPU")
    has_wh = "warehouse" in times
    for name, t in times.items():
        wall, cpu = np.array(t.wall), np.array(t.cpu)
        line = (
            f"{name:<17} {n / np.median(wall):13.0f} {n / wall.min():8.0f} "
            f"{n / np.median(cpu):10.0f}"
        )
        if has_wh and name != "warehouse":
            line += f" | {_fmt(paired(times, name, 'wall'))}; {_fmt(paired(times, name, 'cpu'))}"
        print(line)
    for name, found in values.items():
        print(f"values {name:<17} {found}")
    peers = [k for k in times if k != "warehouse"]
    if has_wh and peers:
        fastest = min(peers, key=lambda k: float(np.median(times[k].wall)))
        print(
            f"warehouse / fastest peer ({fastest}): {_fmt(paired(times, fastest, 'wall'))} "
            "wall (target >= 1.3x)"
        )
    for name, t in times.items():
        print(f"rounds {name:<17} s: {' '.join(f'{x:.2f}' for x in t.wall)}")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--relations", default="country_capital,country_currency")
    ap.add_argument("--languages", default="en")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0, help="the ways' order in each round")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--ways", default=",".join(WAYS), help="comma-separated, from " + ", ".join(WAYS)
    )
    return ap


def main() -> None:
    limit_onednn_cache()  # before the first forward
    args = _parser().parse_args()
    loaded = load_model(args.model, device=args.device)
    batches = plan_batches(loaded, args)
    ways = build_ways(args, loaded, batches)
    with torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        values = check_values(ways, Path(tmp))
        times = timed_rounds(ways, args.rounds, args.seed, Path(tmp))
    report(args, batches, times, values)


if __name__ == "__main__":
    main()
