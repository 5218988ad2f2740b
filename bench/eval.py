"""Eval throughput on the embedded model (CPU): plain `generate` vs the evaluator, measured
side by side on the same prompts, batches and batch size.

    python bench/eval.py [--model smollm2-135m] [--prompts 128] [--batch-size 32] [--repeats 5]
                         [--json out.json]

Builds a pooled warehouse of N prompts of the built-in dataset (both splits) and a selection
of a random 1 % of the ffn.act neurons. Then, batch by batch (the batches the evaluator forms,
`evaluate.batches`, left-padded), it times three ways of answering the same batch, in an order
that rotates every repeat:
- plain: `model.generate(do_sample=False, max_new_tokens=2)`;
- baseline: the evaluator's generation (`generation.answer`: greedy with a KV cache, decode);
- ablated: the same inside `ablate()` of the 1 % selection (hooks registered per batch).
A batch's time is its fastest repeat: on a shared machine other jobs only ever add time, and
interleaving makes the three see the same machine. Finally one end-to-end `run_eval` each of
the baseline and of the selection gives the cost of reading tables, scoring and writing, and
checks that the evaluator's answers equal plain generate's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from warehouse.analysis.ablation import ablate, neuron_indices
from warehouse.analysis.evaluate import EvalConfig, batches, run_eval
from warehouse.ingest.batching import pad_batch
from warehouse.ingest.generation import answer
from warehouse.ingest.models import load_model
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.ingest.sites import units
from warehouse.ingest.tokens import token_ids_by_prompt
from warehouse.store.manifest import Manifest
from warehouse.store.tables import read_table


def write_selection(
    root: Path, name: str, ids: np.ndarray, manifest: Manifest, n_units: int
) -> None:
    ids = np.sort(ids).astype(np.int64)
    (root / "selections").mkdir(exist_ok=True)
    pl.DataFrame(
        {
            "neuron_id": ids,
            "site": ["ffn.act"] * len(ids),
            "layer": (ids // n_units).astype(np.int32),
            "neuron": (ids % n_units).astype(np.int32),
            "rank": np.arange(1, len(ids) + 1),
            "score": np.zeros(len(ids)),
        }
    ).write_parquet(root / "selections" / f"{name}.parquet")
    side = {
        "name": name,
        "relation": None,
        "language": None,
        "site": "ffn.act",
        "pooling": "mean",
        "sql": None,
        "weights_hash": manifest.model.weights_hash,
        "units": n_units,
        "n_layers": manifest.model.n_layers,
        "kind": "control",
        "of": None,
        "seed": 0,
        "size": len(ids),
    }
    (root / "selections" / f"{name}.json").write_text(json.dumps(side))


def plain_answer(loaded, ids: list[list[int]], max_new: int) -> list[str]:
    tok = loaded.tokenizer
    x, mask, _ = pad_batch(ids, tok.pad_token_id, "left", loaded.device)
    gen = loaded.model.generate(
        input_ids=x,
        attention_mask=mask,
        max_new_tokens=max_new,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    return [tok.decode(new, skip_special_tokens=True) for new in gen[:, x.shape[1] :]]


def _prepare(root: Path, loaded, model_name: str, prompts_max: int, batch_size: int):
    """Ingest `prompts_max` prompts pooled and select a random 1 % of neurons: returns the
    ablated neurons (flat), the hooks' neuron map, the prompts and their token-id batches."""
    model = loaded.model
    manifest = ingest(
        IngestConfig(
            out=root, model=model_name, capture="pooled", pooling=["mean"], max_prompts=prompts_max
        ),
        show_progress=False,
        loaded=loaded,
    )
    n_units = units(model.config, "ffn.act")
    total = n_units * loaded.n_layers
    one_pct = np.random.default_rng(0).choice(total, size=round(0.01 * total), replace=False)
    write_selection(root, "one_pct", one_pct, manifest, n_units)
    neurons = {"ffn.act": neuron_indices(model, "ffn.act", one_pct)}
    prompts = pl.from_arrow(read_table(root / "prompts.parquet"))
    ids = token_ids_by_prompt(read_table(root / "tokens.parquet"), prompts.height)
    rows = prompts["prompt_row"].to_list()
    groups = [[ids[rows[i]] for i in b] for b in batches(prompts, batch_size)]
    return one_pct, neurons, prompts, groups


def _time_ways(ways: dict, groups: list, repeats: int) -> dict[str, list[list[float]]]:
    """Seconds per batch and way, the ways interleaved batch by batch and rotated per repeat."""
    times = {k: [[] for _ in groups] for k in ways}
    ways["plain"](groups[0])  # warm up kernels and the allocator
    for rep in range(repeats):
        names = list(ways)
        names = names[rep % 3 :] + names[: rep % 3]
        for b, batch in enumerate(groups):
            for name in names:
                t0 = time.perf_counter()
                ways[name](batch)
                times[name][b].append(time.perf_counter() - t0)
    return times


def _end_to_end(root: Path, loaded, args, plain_text: dict[str, str]) -> dict:
    """`run_eval` once for the baseline and once for the 1 % ablation, and how their answers
    compare with plain generation."""
    common = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, force=True)
    t0 = time.perf_counter()
    base_path = run_eval(root, EvalConfig(baseline=True, **common), False, loaded=loaded)
    e2e_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    cfg = EvalConfig(selection="one_pct", controls=0, split="all", **common)
    abl_path = run_eval(root, cfg, False, loaded=loaded)
    e2e_abl = time.perf_counter() - t0
    base = pl.read_parquet(base_path)
    same = sum(plain_text[p] == g for p, g in base.select("prompt_id", "generated").iter_rows())
    abl = pl.read_parquet(abl_path).join(base, on="prompt_id", suffix="_b")
    changed = int((abl["generated"] != abl["generated_b"]).sum())
    return {"baseline": e2e_base, "ablated": e2e_abl, "same": same, "changed": changed}


def _report(args, n: int, n_batches: int, n_ablated: int, times: dict, e2e: dict) -> dict:
    """Print the figures and return them as the --json record."""
    best = {k: sum(min(t) for t in v) for k, v in times.items()}
    median = {k: sum(statistics.median(t) for t in v) for k, v in times.items()}
    rate = {k: n / v for k, v in best.items()}
    threads, max_new = torch.get_num_threads(), args.max_new_tokens
    print(
        f"model {args.model}: {n} prompts in {n_batches} batches of <= {args.batch_size}, "
        f"{max_new} new tokens, "
        f"{threads} threads; per batch the best of {args.repeats} repeats"
    )
    for k in times:
        ratio = "" if k == "plain" else f"  {best['plain'] / best[k]:.2f}x plain"
        mratio = "" if k == "plain" else f"  (median: {median['plain'] / median[k]:.2f}x)"
        print(f"  {k:<9} {rate[k]:7.2f} prompts/s{ratio}{mratio}")
    print(
        f"  end to end run_eval: baseline {e2e['baseline']:.1f} s, ablated "
        f"{e2e['ablated']:.1f} s (one run each); baseline answers equal plain generate: "
        f"{e2e['same']}/{n}; answers changed by the 1% ablation: {e2e['changed']}/{n}"
    )
    ratios = {f"{k}_vs_plain": round(best["plain"] / best[k], 3) for k in ("baseline", "ablated")}
    medians = {f"{k}_vs_plain_median": round(median["plain"] / median[k], 3)
               for k in ("baseline", "ablated")}  # fmt: skip
    return {
        "model": args.model, "prompts": n, "batches": n_batches, "batch_size": args.batch_size,
        "max_new_tokens": max_new, "repeats": args.repeats, "threads": threads,
        "ablated_neurons": n_ablated,
        "prompts_per_s": {k: round(v, 2) for k, v in rate.items()},
        "seconds_best": {k: round(v, 3) for k, v in best.items()},
        "seconds_median": {k: round(v, 3) for k, v in median.items()},
        **ratios, **medians,
        "run_eval_seconds": {k: round(e2e[k], 2) for k in ("baseline", "ablated")},
        "baseline_equals_plain_generate": f"{e2e['same']}/{n}",
        "answers_changed_by_ablation": f"{e2e['changed']}/{n}",
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    loaded = load_model(args.model)
    model, max_new = loaded.model, args.max_new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "w"
        one_pct, neurons, prompts, groups = _prepare(
            root, loaded, args.model, args.prompts, args.batch_size
        )

        def plain(batch):
            return plain_answer(loaded, batch, max_new)

        def baseline(batch):
            return answer(loaded, batch, max_new)

        def ablated(batch):
            with ablate(model, neurons):
                return answer(loaded, batch, max_new)

        ways = {"plain": plain, "baseline": baseline, "ablated": ablated}
        pids = prompts["prompt_id"].to_list()
        with torch.inference_mode():
            times = _time_ways(ways, groups, args.repeats)
            plain_text = {}
            for b, batch_idx in enumerate(batches(prompts, args.batch_size)):
                for i, text in zip(batch_idx, plain(groups[b]), strict=True):
                    plain_text[pids[i]] = text
        e2e = _end_to_end(root, loaded, args, plain_text)
    result = _report(args, prompts.height, len(groups), len(one_pct), times, e2e)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
