"""Ingest throughput, size and memory on the embedded model (CPU), measured side by side.

    python bench/ingest.py [--relations country_capital,country_currency|all]
                           [--languages en,de,fr] [--sample N] [--batch-size 32] [--rounds 5]
                           [--model smollm2-135m] [--device cpu] [--no-rss] [--cold]
                           [--writer-thread]
    python bench/ingest.py --rounds 0      # the peak-RSS runs only

Prints, on the same prompts and batch size: bare backbone forward tokens/s; ingest
--capture pooled tokens/s; full per-token ingest tokens/s, with shared prefixes (the
default) and with --no-shared-prefix (one plain forward per batch, as the bare forward);
their ratios to bare forward; a bare forward with the linear layers on packed weights, as
ingest runs them (ingest/prepacked.py), against the plain one before it; the share of token
positions the shared plan runs; with `--writer-thread`, per-token ingest with its writer on a
thread of its own, as on a GPU, beside the default (on the CPU, in line between batches);
bytes on disk per token vs raw float16; the writer's gather+encode+write MB/s; the CPU
cost of one chunk-sized file write before and after (a reading of the file system's state);
and the peak RSS of a per-token ingest of four languages' prompts against one of their
longest quarter, each in its own process: both make the same largest batch, which is what a
run's peak follows, so their ratio is what 4x the prompts adds (`_longest_prompts`).
Whole relations are ingested, as users do; `--sample N` takes ingest's fixed sample of N of
those prompts (`--max-prompts`), which shares fewer template prefixes within a batch, so it
compresses less and gains less from shared prefixes (docs/performance.md).

The bare forward runs before and after every ingest, and each ingest is compared with the
mean of the two: this machine's speed drifts by 20 % over minutes, and drift between
neighbouring runs is what the pairing cancels. The median of those ratios is the figure;
the ratio of the fastest runs is printed beside it. Rounds still spread by +-10 % here, so the
default is 5 (the median of 3 moved by 5 % between runs of the same code).

An untimed warm-up ingest runs first and every run's warehouse is deleted once measured, so
each timed ingest writes its files into page-cache memory the machine has used before. On
this VM, a guest page's first use costs the host a fault: writing a file into never-used
memory took 4-7x the CPU of writing it into recycled memory (0.68 vs 0.10 ms per 200 KB
file), which is a cost of a freshly booted VM, not of ingest. `--cold` skips the warm-up and
keeps every warehouse until the end, to measure that case.

Every process of the bench caps oneDNN's kernel cache as `warehouse ingest` does
(`warehouse.launch.limit_onednn_cache`); `ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024` in the
environment measures oneDNN's default instead.
"""

from __future__ import annotations

import argparse
import bisect
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from warehouse.ingest import prefix
from warehouse.ingest.batching import pad_batch
from warehouse.ingest.datasets import load_dataset
from warehouse.ingest.models import load_model
from warehouse.ingest.prefix import packs
from warehouse.ingest.prepacked import prepacked
from warehouse.ingest.run import (
    IngestConfig,
    batch_ranges,
    ingest,
    order_by_length,
    select_prompts,
)
from warehouse.launch import limit_onednn_cache

MODES = ("pooled", "tokens", "plain")  # pooled and per-token shared, per-token plain
THREAD = "thread"  # per-token shared, the writer on a thread of its own (--writer-thread)


def _config(out: Path, args, capture: str, languages: list[str] | None = None) -> IngestConfig:
    """capture "plain": per-token, one plain forward per batch (--no-shared-prefix); "thread":
    per-token, the writer on a thread of its own whatever the device."""
    return IngestConfig(
        out=out,
        model=args.model,
        device=args.device,
        relations=None if args.relations == "all" else args.relations.split(","),
        languages=languages or args.languages.split(","),
        dataset=args.dataset,
        batch_size=args.batch_size,
        capture="pooled" if capture == "pooled" else "tokens",
        max_prompts=args.sample,
        shared_prefix=capture != "plain",
        writer_thread=True if capture == THREAD else None,
    )


def shared_share(ids: list[list[int]], bs: int) -> float:
    """The share of token positions the packed prefix trees run (1.0: nothing shared)."""
    run = 0
    for s, e in batch_ranges(np.array([len(x) for x in ids]), bs):
        passes = packs(ids[s:e]) or []
        run += sum(len(k.tokens) for k in passes) or (e - s) * len(ids[s])
    return run / sum(len(x) for x in ids)


def ordered_prompts(loaded, config: IngestConfig) -> tuple[list, list[list[int]]]:
    """The prompts of an ingest of `config` and their input ids, in the order ingest runs them."""
    prompts = select_prompts(config, load_dataset(config.dataset))
    ordered, encoded = order_by_length(loaded.tokenizer, prompts)
    return ordered, encoded.ids


def prompt_ids(loaded, args) -> list[list[int]]:
    """Input ids in the order and batches ingest uses, so both sides run the same batches."""
    return ordered_prompts(loaded, _config(Path("."), args, "tokens"))[1]


def bare_forward(loaded, ids: list[list[int]], bs: int, packed: bool = False) -> float:
    """Seconds of the backbone's forward over ingest's batches, no hooks; `packed`: with the
    linear layers on packed weights, as ingest runs them (ingest/prepacked.py)."""
    backbone = loaded.model.base_model
    t0 = time.perf_counter()
    with torch.inference_mode(), prepacked(loaded.model) if packed else nullcontext():
        for s, e in batch_ranges(np.array([len(x) for x in ids]), bs):
            x, m, pos = pad_batch(ids[s:e], loaded.tokenizer.pad_token_id, "right", loaded.device)
            backbone(input_ids=x, attention_mask=m, position_ids=pos, use_cache=False)
    if loaded.device.type == "cuda":  # the last batches may still be queued on the GPU
        torch.cuda.synchronize(loaded.device)
    return time.perf_counter() - t0


def timed_ingest(loaded, cfg: IngestConfig) -> float:
    t0 = time.perf_counter()
    ingest(cfg, show_progress=False, loaded=loaded)
    return time.perf_counter() - t0


def file_probe(folder: Path, n: int = 300) -> float:
    """CPU milliseconds one thread spends per 256 KB chunk-like file (temp, write, rename).
    On this VM it moves 10x with the file system's recent history (many files created and
    deleted make creates slow for minutes), so the bench prints it beside its figures."""
    from warehouse.store.files import atomic_write_bytes

    data = np.random.default_rng(0).bytes(1 << 18)
    folder.mkdir()
    t0 = time.thread_time()
    for i in range(n):
        atomic_write_bytes(folder / str(i), data, make_parents=False)
    ms = (time.thread_time() - t0) * 1e3 / n
    shutil.rmtree(folder)
    return ms


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def measure_size_and_codec(root: Path, copy: Path, cold: bool) -> tuple[int, int, float]:
    """Raw float16 and on-disk bytes of a per-token warehouse's activations, and the CPU
    seconds the ingest writer's path takes, on one thread, to write them again: rows gathered
    chunk by chunk, each chunk encoded, shards written, the running array checksum."""
    import zarr

    from warehouse.store.arrays import create_array
    from warehouse.store.manifest import array_specs, load_manifest
    from warehouse.store.writer import ChunkBuffer

    spec = array_specs(load_manifest(root))["activations/ffn.act"]
    raw = spec.shape[0] * spec.shape[1] * spec.shape[2] * 2
    stored = disk_bytes(root / "activations.zarr")
    data = zarr.open_array(root / spec.path, mode="r")[:]
    if not cold:
        shutil.rmtree(root)  # its memory is what the copy below reuses, as a run would
    create_array(copy, spec)
    buffer = ChunkBuffer(copy, spec, 0)
    t0 = time.process_time()  # the writer thread's CPU cost, whatever else runs
    batch = 352  # about a batch of tokens at a time, as ingest gives
    for i in range(0, len(data), batch):
        buffer.add(i, data[i : i + batch])
    buffer.finish()
    comp_s = time.process_time() - t0
    assert buffer.checksum() is not None
    if not cold:
        shutil.rmtree(copy)
    return raw, stored, comp_s


def peak_rss_mb() -> float:
    """This process's peak RSS. On Linux VmHWM: getrusage's ru_maxrss survives exec, so a
    child started by a process that holds a model reports its parent's peak, whatever its
    own (an earlier version of this bench printed the bench process's size for both runs,
    hence 1.000x)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """One per-token ingest in this process; prints its prompt count and peak RSS."""
    loaded = load_model(args.model, device=args.device)
    with tempfile.TemporaryDirectory() as d:
        m = ingest(_config(Path(d) / "w", args, "tokens"), show_progress=False, loaded=loaded)
    rss = peak_rss_mb()
    print(json.dumps({"prompts": m.counts.prompts, "maxrss_mb": rss}))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--relations", default="country_capital,country_currency")
    ap.add_argument("--languages", default="en,de,fr")
    ap.add_argument("--sample", type=int, default=None, help="ingest's fixed sample of N prompts")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="0: the peak-RSS runs only")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-rss", action="store_true", help="skip the two peak-RSS processes")
    ap.add_argument(
        "--cold",
        action="store_true",
        help="no warm-up ingest, and keep every warehouse until the end (see the docstring)",
    )
    ap.add_argument(
        "--max-share",
        type=float,
        default=None,
        help="the packing's MAX_SHARE for this run (ingest/prefix.py; 1: any saving)",
    )
    ap.add_argument(
        "--writer-thread",
        action="store_true",
        help="also time per-token ingest with its writer on a thread of its own",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default=None, help=argparse.SUPPRESS)  # a child's prompts
    return ap


def _rounds(loaded, ids: list[list[int]], args, d: Path) -> dict:
    """Pooled and per-token ingests (shared prefixes) and a plain per-token one, each between
    two bare forwards, then a bare forward on packed weights, `args.rounds` times; the first
    per-token warehouse is also measured for size and codec speed."""
    bares = [bare_forward(loaded, ids, args.batch_size)]
    modes = _modes(args)
    runs: dict[str, list[float]] = {m: [] for m in (*modes, "packed")}
    ratios: dict[str, list[float]] = {m: [] for m in (*modes, "packed")}
    for r in range(args.rounds):
        t = bare_forward(loaded, ids, args.batch_size, packed=True)
        runs["packed"].append(t)
        ratios["packed"].append(bares[-1] / t)
        for mode in modes:
            out = d / f"{mode}{r}"
            t = timed_ingest(loaded, _config(out, args, mode))
            bares.append(bare_forward(loaded, ids, args.batch_size))
            runs[mode].append(t)
            ratios[mode].append((bares[-2] + bares[-1]) / 2 / t)
            if mode == "tokens" and r == 0:  # (it deletes `out` itself unless cold)
                size = measure_size_and_codec(out, d / "copy", args.cold)
            elif not args.cold:
                shutil.rmtree(out)
    return {"bares": bares, "runs": runs, "ratios": ratios, "size": size}


def _modes(args) -> tuple[str, ...]:
    return (*MODES, THREAD) if args.writer_thread else MODES


def _print_speed(args, ids: list[list[int]], m: dict, probes: tuple[float, float]) -> None:
    n_tokens = sum(len(x) for x in ids)
    bare = min(m["bares"])
    ratios = m["ratios"]
    raw, stored, comp_s = m["size"]
    print(
        f"prompts {len(ids)}, tokens {n_tokens}, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}, relations {args.relations}, "
        f"languages {args.languages}"
    )
    print(
        f"device {args.device}, model {args.model}, rounds {args.rounds}, "
        f"{'cold (no warm-up, warehouses kept)' if args.cold else 'warm-up ingest first'}"
    )
    print(
        f"shared prefixes     the packing runs {shared_share(ids, args.batch_size):.3f} of the "
        "token positions"
    )
    print(f"bare forward        {n_tokens / bare:9.0f} tok/s   1.00x  (fastest run)")
    packed = ratios["packed"]
    print(
        f"bare forward, packed weights {n_tokens / min(m['runs']['packed']):9.0f} tok/s   "
        f"{float(np.median(packed)):.3f}x  (rounds {' '.join(f'{x:.2f}' for x in packed)}; "
        "ingest runs its linear layers this way)"
    )
    names = {
        "pooled": "pooled, shared",
        "tokens": "per-token, shared",
        "plain": "per-token, plain",
        THREAD: "per-token, thread",
    }
    targets = {"pooled": "1.3", "tokens": "1.3", "plain": "0.85", THREAD: "1.3"}
    for mode in _modes(args):
        fastest = min(m["runs"][mode])
        print(
            f"ingest {names[mode]:18} {n_tokens / fastest:9.0f} tok/s   "
            f"{float(np.median(ratios[mode])):.3f}x  (target >= {targets[mode]}x; rounds "
            f"{' '.join(f'{x:.2f}' for x in ratios[mode])}; fastest runs {bare / fastest:.2f}x)"
        )
    print(
        f"per-token bytes     {stored / n_tokens:9.0f} B/token on disk vs {raw / n_tokens:.0f} "
        f"raw float16: 1/{raw / stored:.2f}  (target <= 1/1.45)"
    )
    print(
        f"chunk encode+write  {raw / comp_s / 1e6:9.0f} MB/s of float16 per CPU-second "
        "(the writer's path: gather, encode, shards written, crc32c)"
    )
    print(
        f"file probe          {probes[0]:9.2f} ms CPU per 256 KB file before, "
        f"{probes[1]:.2f} after (temp + write + rename, in the bench's folder)"
    )


RSS_LANGUAGES = ("en", "de", "fr", "es")


def _longest_prompts(loaded, args, path: Path) -> tuple[int, int, int, str]:
    """Write the longest quarter of the four languages' prompts to a dataset file at `path`,
    or more where the batch with the most tokens lies lower: every prompt of that batch's
    length is kept, so the run makes the same batch. Peak RSS follows the largest batch a run
    has held (its buffers and the forward's tensors), so a run of these prompts and a run of
    all of them hold the same largest batch and differ in how many prompts they hold besides.
    Returns (prompts kept, all prompts, tokens of the largest batch, the kept languages)."""
    prompts, ids = ordered_prompts(loaded, _config(Path("."), args, "tokens", list(RSS_LANGUAGES)))
    lengths = [len(x) for x in ids]
    s, e = max(
        batch_ranges(np.array(lengths), args.batch_size),
        key=lambda r: (r[1] - r[0]) * lengths[r[0]],
    )
    quarter = -(-len(lengths) // 4)  # rounded up
    first = min(len(lengths) - quarter, bisect.bisect_left(lengths, lengths[s]))
    facts: dict[tuple[str, str, str], dict] = {}
    for p in prompts[first:]:
        key = (p.relation, p.language, p.subject_id)
        row = facts.setdefault(key, {"relation": p.relation, "language": p.language,
                                     "subject_id": p.subject_id, "subject": p.subject,
                                     "object": p.object, "aliases": list(p.aliases),
                                     "templates": []})  # fmt: skip
        row["templates"].append(p.template)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in facts.values()))
    kept = sorted({p.language for p in prompts[first:]})
    return len(prompts) - first, len(prompts), (e - s) * lengths[s], ",".join(kept)


def _print_rss(args, loaded) -> None:
    """Peak RSS of a per-token ingest of all four languages' prompts against one of their
    longest quarter (`_longest_prompts`), each in a fresh process: what a run's length adds."""
    rss = []
    with tempfile.TemporaryDirectory() as d:
        longest = Path(d) / "longest.jsonl"
        n_longest, n_all, biggest, kept = _longest_prompts(loaded, args, longest)
        for languages, dataset in (
            (kept, ["--dataset", str(longest)]),
            (",".join(RSS_LANGUAGES), []),
        ):
            cmd = [sys.executable, __file__, "--child", "--relations", args.relations,
                   "--languages", languages, "--batch-size", str(args.batch_size),
                   "--model", args.model, "--device", args.device, *dataset]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rss.append(json.loads(out.stdout.strip().splitlines()[-1]))
    a, b = rss
    print(
        f"peak RSS            {a['maxrss_mb']:9.0f} MB at {a['prompts']} prompts (the longest), "
        f"{b['maxrss_mb']:.0f} MB at {b['prompts']} prompts: {b['maxrss_mb'] / a['maxrss_mb']:.3f}x"
        f"  (target <= 1.10x; both runs hold the largest batch, {biggest} tokens)"
    )
    assert (a["prompts"], b["prompts"]) == (n_longest, n_all)


def _speed(loaded, args) -> None:
    """The rounds (`_rounds`) after a warm-up, and their figures."""
    ids = prompt_ids(loaded, args)
    bare_forward(loaded, ids[: args.batch_size], args.batch_size)  # warm-up
    with tempfile.TemporaryDirectory() as d:
        probe_before = file_probe(Path(d) / "probe")
        if not args.cold:
            ingest(_config(Path(d) / "warm-up", args, "tokens"), show_progress=False, loaded=loaded)
            shutil.rmtree(Path(d) / "warm-up")
        measured = _rounds(loaded, ids, args, Path(d))
        probe_after = file_probe(Path(d) / "probe")
    _print_speed(args, ids, measured, (probe_before, probe_after))


def main() -> None:
    limit_onednn_cache()  # before the first forward; the RSS children inherit it
    args = _parser().parse_args()
    if args.child:
        child(args)
        return
    if args.max_share is not None:
        prefix.MAX_SHARE = args.max_share  # packs reads it on every batch
    loaded = load_model(args.model, device=args.device)
    if args.rounds > 0:
        _speed(loaded, args)
        sys.stdout.flush()  # the RSS runs below take a while
    if not args.no_rss:
        _print_rss(args, loaded)


if __name__ == "__main__":
    main()
