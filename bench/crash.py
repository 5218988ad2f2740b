"""Crash safety, measured: SIGKILL `warehouse ingest` and `warehouse eval` at random moments,
re-run the same command each time, and compare the result with an uninterrupted run.

    python bench/crash.py [--kills 10] [--seed 0] [--model tiny|smollm2-135m|PATH] [--json F]

For each command, rounds of "start, SIGKILL after a random delay, start again, ..." run on a
fresh copy until the command completes; rounds repeat until `--kills` kills landed while the
process held the writer lock (kills that land after it let go, during Python's shutdown,
are checked too and counted apart).
Each kill lands at a moment drawn uniformly over the command's working phase: the clock
starts when the process takes the writer lock, and the delay is uniform over the span the
uninterrupted run held it, so kills land among chunk writes, manifest commits, checksums and
table writes (or model loading and generation for eval) rather than during Python start-up.
After every kill, `verify` must find no damage (the stale lock of the killed process and its
temp files are expected and are counted separately); after each round the warehouse must
equal the uninterrupted one: every table and array file byte for byte, the manifest except its
finish time, evals/ files byte for byte and their sidecars except timings.

The default model is a 2-layer random Llama built here (seconds per run); `smollm2-135m`
uses the embedded model (minutes). Figures go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SUBJECTS = [f"Land{i}" for i in range(40)]


def tiny_model(folder: Path) -> Path:
    """A 2-layer random Llama and a byte-level BPE tokenizer (as the tests build them)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([f"The capital of {s} is City{s}." for s in SUBJECTS], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=1,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def dataset(path: Path) -> Path:
    rows = []
    for i, s in enumerate(SUBJECTS):
        for rel, obj in (("capital", f"City{i}"), ("currency", f"Coin{i}")):
            rows.append(
                {
                    "relation": rel,
                    "language": "en",
                    "subject": s,
                    "object": obj,
                    "templates": [
                        f"The {rel} of {{subject}} is",
                        f"{{subject}}'s {rel}" + " x" * (i % 5),  # several lengths
                    ],
                }
            )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def ingest_args(out: Path, model: str, data: Path) -> list[str]:
    return [
        "ingest", "--out", str(out), "--model", model, "--dataset", str(data),
        "--sites", "ffn.act,ffn.down", "--batch-size", "4", "--token-chunk", "16",
        "--prompt-chunk", "8", "--quiet",
    ]  # fmt: skip


def eval_args(w: Path, model: str) -> list[str]:
    return [
        "eval", str(w), "--selection", "cap", "--top-counts", "6,12", "--controls", "1",
        "--split", "test", "--batch-size", "16", "--model", model, "--quiet",
    ]  # fmt: skip


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "warehouse", *args], capture_output=True, text=True, check=False
    )


def timed_run(args: list[str], lock: Path) -> tuple[float, float]:
    """(seconds until the writer lock appeared, seconds until the end) of one clean run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "warehouse", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    locked = None
    while proc.poll() is None:
        if locked is None and lock.exists():
            locked = time.perf_counter() - t0
        time.sleep(0.005)
    if proc.returncode:
        raise SystemExit(f"uninterrupted run failed: {proc.stderr}")
    end = time.perf_counter() - t0
    return (locked if locked is not None else 0.0), end


def snapshot(root: Path) -> dict[str, object]:
    """What must be equal: file bytes, the manifest less its finish time, sidecars less
    timings. Temp files of killed processes are left out (verify reports them)."""
    from warehouse.store.files import is_temp_file

    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if not p.is_file() or is_temp_file(p.name) or p.name == ".lock":
            continue
        if p.suffix == ".json" and (p.name == "manifest.json" or rel.startswith("evals/")):
            d = json.loads(p.read_text())
            d.get("state", {}).pop("finished", None)
            d.pop("timing", None)
            out[rel] = d
        else:
            out[rel] = p.read_bytes()
    return out


def damage(root: Path) -> list[str]:
    """verify's problems other than those a kill leaves by design (its stale lock, its temp
    files, an eval's missing results)."""
    from warehouse.store.checksums import verify

    if not (root / "manifest.json").exists():
        return []  # killed before the warehouse was renamed into place: nothing to check
    return [
        p
        for p in verify(root).problems
        if not p.startswith(("stale writer lock", "leftover temp file"))
    ]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@dataclass
class _Tally:
    """What the kill rounds of one command saw so far."""

    kills: int = 0
    during_write: int = 0  # kills that landed while the process held the writer lock
    resumes: int = 0
    rounds: int = 0
    equal: int = 0
    temp_left: int = 0
    damaged: list[str] = field(default_factory=list)


def _attempt(
    name: str,
    target: Path,
    args: list[str],
    span: float,
    rng: random.Random,
    tally: _Tally,
    kills_wanted: int,
) -> tuple[bool, float | None]:
    """Start the command once; SIGKILL it after a random delay unless it finishes first.
    Returns (finished, its working span when it finished without a kill)."""
    lock = target / ".lock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "warehouse", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The clock starts when this process takes the writer lock (Python start-up and model
    # loading take seconds and vary with the machine's load), and the kill lands uniformly
    # within the working span the uninterrupted run needed.
    while proc.poll() is None and f'"pid": {proc.pid},' not in _read(lock):
        time.sleep(0.002)
    delay = rng.uniform(0.0, span)
    t0 = time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t0 < delay:
        time.sleep(0.002)
    if proc.poll() is None and tally.during_write < kills_wanted:
        holder = _read(lock)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        tally.kills += 1
        tally.during_write += f'"pid": {proc.pid},' in holder
        tally.temp_left += sum(
            1 for p in target.rglob("*") if ".tmp-" in p.name or ".partial" in p.name
        )
        tally.damaged += [f"{name} kill {tally.kills}: {d}" for d in damage(target)]
        tally.resumes += 1
        return False, None
    proc.wait()
    if proc.returncode:
        raise SystemExit(f"{name} resume failed: {proc.stderr}")
    return True, time.perf_counter() - t0


def crash_rounds(
    name: str,
    fresh: Callable[[int], Path],
    args_of: Callable[[Path], list[str]],
    reference: dict,
    window: tuple[float, float],
    kills_wanted: int,
    rng: random.Random,
) -> dict:
    tally = _Tally()
    span = window[1] - window[0]  # seconds the uninterrupted run held the writer lock
    # Only kills that land while the process holds the writer lock count towards the target:
    # one that lands after it released the lock (the work done, Python shutting down) is
    # still checked, but reported apart.
    while tally.during_write < kills_wanted:
        tally.rounds += 1
        target = fresh(tally.rounds)
        first_run = True
        while True:
            args = args_of(target)
            done, worked = _attempt(name, target, args, span, rng, tally, kills_wanted)
            if done:
                break
            first_run = False
        if first_run and worked is not None:
            # A whole run went by without a kill: the machine's load changed since the
            # reference run, so its working span is the one to draw from now.
            span = worked
        same = snapshot(target) == reference
        tally.equal += same
        if not same:
            differs = "result differs from the uninterrupted run"
            tally.damaged.append(f"{name} round {tally.rounds}: {differs}")
        print(f"  {name} round {tally.rounds}: {tally.kills} kills so far, equal: {same}")
    return {
        "kills": tally.kills,
        "kills_while_holding_lock": tally.during_write,
        "resumes": tally.resumes,
        "rounds": tally.rounds,
        "rounds_equal_to_reference": tally.equal,
        "temp_files_left_by_kills": tally.temp_left,
        "damage_found": tally.damaged,
    }


def crash_ingest(work: Path, model: str, data: Path, kills: int, rng: random.Random) -> dict:
    """Kill rounds of `warehouse ingest`; leaves the uninterrupted run in work/ref."""
    ref = work / "ref"
    startup, full = timed_run(ingest_args(ref, model, data), ref / ".lock")
    print(f"ingest: uninterrupted run {full:.1f} s (lock taken after {startup:.1f} s)")
    return crash_rounds(
        "ingest",
        lambda i: work / f"ingest-{i}",
        lambda out: ingest_args(out, model, data),
        snapshot(ref),
        (startup, full),
        kills,
        rng,
    )


def crash_eval(work: Path, model: str, kills: int, rng: random.Random) -> dict:
    """Kill rounds of `warehouse eval` on copies of work/ref with stats and a selection."""
    # Stats and a selection first (in-process), then the same eval everywhere.
    from warehouse.analysis.selections import select
    from warehouse.analysis.stats import run_stats

    run_stats(work / "ref", split="all", show_progress=False)
    select(work / "ref", "cap", "capital", site="ffn.act", top=12)
    base = work / "eval-base"
    shutil.copytree(work / "ref", base)
    eval_ref = work / "eval-ref"
    shutil.copytree(base, eval_ref)
    startup, full = timed_run(eval_args(eval_ref, model), eval_ref / ".lock")
    print(f"eval: uninterrupted run {full:.1f} s (lock taken after {startup:.1f} s)")

    def fresh_eval(i: int) -> Path:
        target = work / f"eval-{i}"
        shutil.copytree(base, target)
        return target

    def args_of(w: Path) -> list[str]:
        return eval_args(w, model)

    reference = snapshot(eval_ref)
    return crash_rounds("eval", fresh_eval, args_of, reference, (startup, full), kills, rng)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10, help="kills per command (at least)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="tiny", help="tiny (built here), smollm2-135m or a path")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    opts = ap.parse_args()
    rng = random.Random(opts.seed)
    work = Path(tempfile.mkdtemp(prefix="crash-"))
    os.environ.setdefault("WAREHOUSE_CACHE", str(work / "cache"))
    try:
        model = str(tiny_model(work / "model")) if opts.model == "tiny" else opts.model
        data = dataset(work / "facts.jsonl")
        ingest_figures = crash_ingest(work, model, data, opts.kills, rng)
        eval_figures = crash_eval(work, model, opts.kills, rng)
        figures = {"model": opts.model, "seed": opts.seed, "ingest": ingest_figures,
                   "eval": eval_figures}  # fmt: skip
        print(json.dumps(figures, indent=2))
        if opts.json:
            opts.json.write_text(json.dumps(figures, indent=2) + "\n")
        if ingest_figures["damage_found"] or eval_figures["damage_found"]:
            raise SystemExit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
