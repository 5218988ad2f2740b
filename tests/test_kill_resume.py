"""SIGKILL an ingest at random moments, resume each time, and compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warehouse.store.checksums import verify

SUBJECTS = [f"Country{i}" for i in range(40)]


@pytest.fixture(scope="module")
def many_prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "many.jsonl"
    with open(path, "w") as f:
        for i, s in enumerate(SUBJECTS):
            for rel, obj in (("capital", f"City{i}"), ("currency", f"Coin{i}")):
                row = {
                    "relation": rel,
                    "language": "en",
                    "subject": s,
                    "object": obj,
                    "templates": [
                        f"The {rel} of {{subject}} is",
                        f"{{subject}} has the {rel}" + " x" * (i % 5),
                    ],
                }
                f.write(json.dumps(row) + "\n")
    return path


def _cmd(model: Path, data: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "warehouse",
        "ingest",
        "--out",
        str(out),
        "--model",
        str(model),
        "--dataset",
        str(data),
        "--sites",
        "ffn.act,ffn.down",
        "--batch-size",
        "4",
        "--quiet",
        "--token-chunk",
        "16",
        "--prompt-chunk",
        "8",
    ]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_sigkill_and_resume(tmp_path, tiny_llama_dir, many_prompts, monkeypatch):
    env = dict(os.environ)
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    subprocess.run(_cmd(tiny_llama_dir, many_prompts, ref), check=True, env=env)
    full = time.perf_counter() - t0
    out = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(_cmd(tiny_llama_dir, many_prompts, out), env=env)
        time.sleep(rng.uniform(0.2, full))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    subprocess.run(_cmd(tiny_llama_dir, many_prompts, out), check=True, env=env)
    assert kills >= 1
    assert _files(out) == _files(ref)
    assert verify(out).ok


def _crash_bench():
    """bench/crash.py, the measured version of these tests (≥ 10 kills of each command)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "crash.py"
    spec = importlib.util.spec_from_file_location("crash_bench", path)
    mod = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would be: its dataclasses look their module up.
    sys.modules["crash_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_eval_sigkill_and_resume(tmp_path, tiny_llama_dir, many_prompts):
    """SIGKILL `warehouse eval` twice at random moments of its working phase, re-run it each
    time: the evals/ files equal an uninterrupted run's, and no kill leaves damage."""
    import shutil

    from warehouse.analysis.selections import select
    from warehouse.analysis.stats import run_stats
    from warehouse.ingest.run import IngestConfig, ingest

    crash = _crash_bench()
    base = tmp_path / "base"
    ingest(
        IngestConfig(out=base, model=str(tiny_llama_dir), dataset=str(many_prompts)),
        show_progress=False,
    )
    run_stats(base, split="all", show_progress=False)
    select(base, "cap", "capital", top=12)
    ref = tmp_path / "ref"
    shutil.copytree(base, ref)
    model = str(tiny_llama_dir)
    startup, full = crash.timed_run(crash.eval_args(ref, model), ref / ".lock")
    assert (ref / "evals" / "baseline.parquet").is_file()

    def fresh(i: int) -> Path:
        shutil.copytree(base, tmp_path / f"run{i}")
        return tmp_path / f"run{i}"

    figures = crash.crash_rounds(
        "eval",
        fresh,
        lambda w: crash.eval_args(w, model),
        crash.snapshot(ref),
        (startup, full),
        2,
        random.Random(3),
    )
    assert figures["kills_while_holding_lock"] == 2
    assert figures["kills"] >= 2 and figures["resumes"] == figures["kills"]
    assert figures["rounds_equal_to_reference"] == figures["rounds"]
    assert figures["damage_found"] == []
