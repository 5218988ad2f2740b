"""One writer at a time, stale locks of killed writers, and readers during an ingest.

The ingest under test runs in a real subprocess. So that the test, not the machine's speed,
decides when it moves on, the subprocess wraps `Capturer.run` (monkeypatched inside that
process only; the project has no such hook) to wait before batch i until the file
`<gate>.i` or `<gate>.all` exists.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import ingest_cfg

from warehouse.ingest.run import IngestConfig, ingest
from warehouse.store.checksums import verify
from warehouse.store.errors import WarehouseError
from warehouse.store.format import PROMPTS_FILE
from warehouse.store.lock import (
    LOCK,
    UNLOCKED_CREATION_GRACE_S,
    LockedError,
    LockInfo,
    WriterLock,
    lock_status,
)

GATED_INGEST = """
import os, sys, time
from warehouse.ingest import capture
GATE = sys.argv[1]
real = capture.Capturer.run
calls = [0]
def gated(self, ids):
    i = calls[0]
    calls[0] += 1
    open(f"{GATE}.waiting.{i}", "w").close()  # batches before i are captured
    while not (os.path.exists(f"{GATE}.{i}") or os.path.exists(f"{GATE}.all")):
        time.sleep(0.01)
    return real(self, ids)
capture.Capturer.run = gated
sys.argv = ["warehouse"] + sys.argv[2:]
from warehouse.cli import main
main()
"""


class Gate:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix

    def open(self, i: int | str) -> None:
        Path(f"{self.prefix}.{i}").touch()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "facts.jsonl"
    rows = [
        {
            "relation": rel,
            "language": "en",
            "subject": f"Land{i}",
            "object": f"{rel}{i}",
            "templates": [f"The {rel} of {{subject}} is", f"{{subject}}: {rel}" + " x" * (i % 3)],
        }
        for i in range(16)
        for rel in ("capital", "currency")
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _cfg(out: Path, model: Path, data: Path) -> IngestConfig:
    return ingest_cfg(out, model, data, batch_size=4, token_chunk=16, prompt_chunk=8)


def _args(out: Path, model: Path, data: Path) -> list[str]:
    return [
        "ingest", "--out", str(out), "--model", str(model), "--dataset", str(data),
        "--batch-size", "4", "--token-chunk", "16", "--prompt-chunk", "8", "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama_dir, dataset, module_cache) -> Path:
    out = tmp_path_factory.mktemp("ref") / "w"
    ingest(_cfg(out, tiny_llama_dir, dataset), show_progress=False)
    return out


def _gated_ingest(out: Path, model: Path, data: Path, gate: Gate) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", GATED_INGEST, str(gate.prefix), *_args(out, model, data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(pred, timeout: float = 300.0) -> bool:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.02)
    return True


def _state(w: Path) -> dict:
    try:
        return json.loads((w / "manifest.json").read_text())["state"]
    except (FileNotFoundError, ValueError):
        return {}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_second_writer_is_refused(tmp_path, tiny_llama_dir, dataset, reference):
    out = tmp_path / "w"
    gate = Gate(tmp_path / "gate")
    for i in range(4):
        gate.open(i)  # four batches, then it waits while holding the lock
    first = _gated_ingest(out, tiny_llama_dir, dataset, gate)
    try:
        assert _wait_for(
            lambda: (out / LOCK).exists() and _state(out).get("prompts_committed", 0) > 0
        )
        holder = LockInfo.read(out / LOCK)
        assert holder is not None and holder.pid == first.pid and holder.command == "ingest"
        # the same command again (it would resume) and a stats run are both turned away
        for args in (_args(out, tiny_llama_dir, dataset), ["stats", str(out), "--quiet"]):
            p = subprocess.run(
                [sys.executable, "-m", "warehouse", *args], capture_output=True, text=True
            )
            if args[0] == "stats" and "ingest has not finished" in p.stderr:
                continue  # stats refuses an unfinished ingest even before the lock
            assert p.returncode == 2, p.stderr
            assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
            assert f"is being written by `ingest` (pid {first.pid}" in p.stderr
        assert first.poll() is None  # the first writer was not disturbed
    finally:
        gate.open("all")
        first.wait(timeout=300)
    assert first.returncode == 0, first.stderr
    assert not (out / LOCK).exists()
    assert _files(out) == _files(reference)
    assert verify(out).ok


def test_stale_lock_of_a_killed_writer_is_taken_over(tmp_path, tiny_llama_dir, dataset, reference):
    out = tmp_path / "w"
    gate = Gate(tmp_path / "gate")
    for i in range(6):
        gate.open(i)
    proc = _gated_ingest(out, tiny_llama_dir, dataset, gate)
    assert _wait_for(lambda: _state(out).get("prompts_committed", 0) > 0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    status = lock_status(out)
    assert status is not None and status["pid"] == proc.pid and status["stale"] is True
    problems = verify(out).problems
    stale = (
        f"stale writer lock {LOCK}: `ingest` (pid {proc.pid}) was killed; re-run that command "
        f"(it takes the lock over), or delete {LOCK}"
    )
    assert stale in problems
    # A kill in the middle of a chunk write also leaves that write's temp file, which verify
    # names too (and the resumed ingest removes); nothing else may be wrong.
    others = [p for p in problems if p != stale]
    assert all(p.startswith("leftover temp file: ") for p in others), others
    ingest(_cfg(out, tiny_llama_dir, dataset), show_progress=False)
    assert not (out / LOCK).exists()
    assert _files(out) == _files(reference)
    assert verify(out).ok


def test_temp_folders_of_killed_creations_are_removed(
    tmp_path, tiny_llama_dir, dataset, monkeypatch
):
    """A SIGKILL while ingest lays out a new warehouse leaves its temp folder beside it; the
    next ingest into that --out removes it, and only folders no live process is making."""
    from warehouse.ingest import run as run_mod

    def made(name: str, age_s: float = 0.0, **lock) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "prompts.parquet").write_bytes(b"half")
        if lock:
            _write_lock(folder, command="ingest (creating)", **lock)
        t = time.time() - age_s
        os.utime(folder, (t, t))
        return folder

    made(".w.tmp-killed", create_time=12345.0)  # our pid, another start time: creator gone
    made(".w.tmp-live")  # held by this live process
    made(".w.tmp-elsewhere", host="some-other-machine", pid=1)  # cannot be checked from here
    made(".w.tmp-unlocked-old", age_s=2 * UNLOCKED_CREATION_GRACE_S)
    made(".w.tmp-unlocked-new")  # maybe between its mkdtemp and its lock
    made(".w2.tmp-killed", create_time=12345.0)  # another warehouse's: not ours to clean
    seen_locks = []
    real_lay_out = run_mod._lay_out

    def lay_out(root, *args):
        seen_locks.append(LockInfo.read(root / LOCK))
        return real_lay_out(root, *args)

    monkeypatch.setattr(run_mod, "_lay_out", lay_out)
    ingest(_cfg(tmp_path / "w", tiny_llama_dir, dataset), show_progress=False)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left == [".w.tmp-elsewhere", ".w.tmp-live", ".w.tmp-unlocked-new", ".w2.tmp-killed"]
    # the new folder was locked by this process while being made, and the lock did not move
    # into the warehouse with it
    assert [(i.pid, i.command) for i in seen_locks] == [(os.getpid(), "ingest (creating)")]
    assert not (tmp_path / "w" / LOCK).exists()
    assert verify(tmp_path / "w").ok


def test_readers_during_an_ingest_see_only_committed_batches(
    tmp_path, tiny_llama_dir, dataset, reference
):
    """While an ingest runs, every read returns exactly the reference values of the rows
    committed when the warehouse was opened, and never a row beyond them."""
    from warehouse.api import Warehouse

    ref = Warehouse.open(reference)
    ref_resp = ref.sql("select prompt_row, layer, neuron, pooling, value from responses").sort(
        ["pooling", "prompt_row", "layer", "neuron"]
    )
    ref_act = ref.sql("select token_row, layer, neuron, value from activations").sort(
        ["token_row", "layer", "neuron"]
    )
    n_prompts = ref.manifest.counts.prompts
    prompts = pl.read_parquet(reference / PROMPTS_FILE).sort("prompt_row")
    ends = (prompts["token_offset"] + prompts["n_tokens"]).to_numpy()  # each prompt's end row

    out = tmp_path / "w"
    gate = Gate(tmp_path / "gate")
    proc = _gated_ingest(out, tiny_llama_dir, dataset, gate)
    seen, reads, batch = set(), 0, 0
    try:
        assert _wait_for(lambda: (out / "manifest.json").exists())
        while True:
            w = Warehouse.open(out)
            state = w.manifest.state
            p_done, t_done = state.prompts_committed, state.tokens_committed
            if state.complete:
                p_done, t_done = n_prompts, ref.manifest.counts.tokens
            resp = w.sql("select prompt_row, layer, neuron, pooling, value from responses")
            resp = resp.sort(["pooling", "prompt_row", "layer", "neuron"])
            act = w.sql("select token_row, layer, neuron, value from activations")
            act = act.sort(["token_row", "layer", "neuron"])
            # A derived pooling (max, last) shows a prompt once all its token rows are
            # committed; a stored one once its own chunk is.
            p_tok = min(p_done, int(np.searchsorted(ends, t_done, "right")))
            derived = pl.col("pooling").is_in(list(w.manifest.capture.derived_pooling))
            limit = pl.when(derived).then(p_tok).otherwise(p_done)
            assert resp.equals(ref_resp.filter(pl.col("prompt_row") < limit))
            assert act.equals(ref_act.filter(ref_act["token_row"] < t_done))
            seen.add(p_done)
            reads += 1
            if state.complete:
                break
            # Let the ingest run two more batches (one prompt chunk) and read again, while
            # its writer thread may still be writing.
            gate.open(batch)
            gate.open(batch + 1)
            batch += 2
            # Wait until both batches are captured (the ingest waits at the next gate), however
            # slow the machine; then give the writer thread a moment to commit. (Two batches
            # need not complete a chunk, so no change is fine too.)
            waiting = Path(f"{gate.prefix}.waiting.{batch}")
            _wait_for(lambda at=waiting: proc.poll() is not None or at.exists())
            _wait_for(lambda st=state: proc.poll() is not None or _state(out) != st, timeout=5)
    finally:
        gate.open("all")
        proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len([s for s in seen if 0 < s < n_prompts]) >= 3, seen  # half-written states read
    assert n_prompts in seen


# ------------------------------------------------------------------------- the lock itself


def _write_lock(root: Path, **fields) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": "stats"}
    info.update(started="2026-01-01T00:00:00Z", **fields)
    (root / LOCK).write_text(json.dumps(info))


def test_lock_is_exclusive_and_released(tmp_path):
    with WriterLock(tmp_path, "ingest"):
        assert LockInfo.read(tmp_path / LOCK).pid == os.getpid()
        with pytest.raises(LockedError, match="is being written by `ingest`"):
            WriterLock(tmp_path, "stats").acquire()
    assert not (tmp_path / LOCK).exists()
    with pytest.raises(RuntimeError):
        with WriterLock(tmp_path, "eval"):
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK).exists()  # released on errors too


def test_lock_of_a_dead_pid_or_a_reused_pid_is_stale(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path, pid=dead.pid)
    assert lock_status(tmp_path)["stale"] is True
    with WriterLock(tmp_path, "ingest"):
        assert LockInfo.read(tmp_path / LOCK).command == "ingest"
    # our own pid but another start time: the pid was reused after the holder died
    _write_lock(tmp_path, create_time=12345.0)
    assert lock_status(tmp_path)["stale"] is True
    with WriterLock(tmp_path, "ingest"):
        pass


def test_lock_held_on_another_host_is_never_broken(tmp_path):
    _write_lock(tmp_path, host="some-other-machine", pid=1)
    with pytest.raises(LockedError, match="on host some-other-machine") as e:
        WriterLock(tmp_path, "ingest").acquire()
    assert f"delete {tmp_path / LOCK}" in str(e.value)
    assert LockInfo.read(tmp_path / LOCK).host == "some-other-machine"
    assert lock_status(tmp_path)["stale"] is None


def test_unreadable_lock_is_not_broken(tmp_path):
    (tmp_path / LOCK).write_text("{not json")
    with pytest.raises(WarehouseError, match="unreadable writer lock"):
        WriterLock(tmp_path, "ingest").acquire()
    assert (tmp_path / LOCK).read_text() == "{not json"
