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
