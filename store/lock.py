"""One writer at a time: a lock file inside the warehouse, created with O_EXCL.

Every command that writes into a warehouse (ingest, stats, select, eval) holds the lock while
it writes; readers (query, info, verify, the API) never take it, since a writer only ever
publishes whole files by rename and the manifest says how many array rows are committed.

The file holds the holder's pid, host name, command and start time. A lock whose pid no
longer runs on this host is stale (its process was killed) and is taken over; a lock held on
another host cannot be checked from here, so it is reported with a way to remove it by hand.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from warehouse.store.errors import LockedError, WarehouseError
from warehouse.store.files import loads_json, remove_temp_entries
from warehouse.store.location import kind_of, open_regular

LOCK = ".lock"


@dataclass(frozen=True)
class LockInfo:
    pid: int
    host: str
    command: str
    started: str
    # The holder's process start time (psutil): a pid reused by another process after a
    # kill has another start time, so the lock is still recognised as stale.
    create_time: float | None = None

    @classmethod
    def read(cls, path: Path) -> LockInfo | None:
        """The lock's holder, or None when the file is gone or unreadable (being written, or
        damaged: empty, not JSON, a folder, a FIFO, a link)."""
        try:
            with open_regular(path) as f:
                d = loads_json(f.read())
            ct = d.get("create_time")
            return cls(
                int(d["pid"]),
                str(d["host"]),
                str(d["command"]),
                str(d["started"]),
                None if ct is None else float(ct),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, WarehouseError):
            return None

    def alive(self) -> bool | None:
        """True/False for a process on this host; None when it runs on another host."""
        if self.host != socket.gethostname():
            return None
        return _process_alive(self.pid, self.create_time)


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _process_alive(pid: int, create_time: float | None) -> bool:
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        # A SIGKILLed child its parent has not reaped yet is a zombie: it writes nothing.
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False  # the pid now belongs to another process
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


class WriterLock:
    """`with WriterLock(root, "ingest"):` -- hold the warehouse's writer lock."""

    def __init__(self, root: Path, command: str) -> None:
        self.path = Path(root) / LOCK
        self.command = command
        self.held = False

    def acquire(self) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "create_time": _create_time(os.getpid()),
        }
        data = (json.dumps(info) + "\n").encode()
        for _ in range(3):  # a stale lock removed by us (or a racing process) is retried
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as e:
                if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise WarehouseError(
                        f"{self.path.parent} is read-only here ({e.strerror}); "
                        "copy the warehouse to a writable folder to change it"
                    ) from None
                raise
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            self.held = True
            return
        raise LockedError(f"could not take the writer lock {self.path}; try again")

    def _take_over_if_stale(self) -> None:
        holder = LockInfo.read(self.path)
        if holder is None:
            # Just created and not yet written by its holder, or damaged: give it a moment.
            time.sleep(0.2)
            holder = LockInfo.read(self.path)
            if holder is None:
                if self.path.exists():
                    raise LockedError(
                        f"{self.path.parent} has an unreadable writer lock {self.path.name}; "
                        "if no other warehouse command runs, delete that file and re-run"
                    )
                return
        alive = holder.alive()
        if alive is None:
            raise LockedError(
                f"{self.path.parent} is locked by `{holder.command}` (pid {holder.pid} on host "
                f"{holder.host}, since {holder.started}); wait for it, or if it is no longer "
                f"running delete {self.path} and re-run"
            )
        if alive:
            raise LockedError(
                f"{self.path.parent} is being written by `{holder.command}` (pid {holder.pid}, "
                f"since {holder.started}); wait for it to finish, then re-run"
            )
        # Stale: its process is gone. Rename it away first, so that of two processes taking
        # it over at once only one removes it (the other's rename fails and it retries).
        grave = self.path.with_name(f"{LOCK}.stale-{os.getpid()}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        if LockInfo.read(grave) != holder:
            # Another process took the stale lock over between our read and our rename:
            # put its live lock back (link fails if yet another lock appeared meanwhile).
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass
        grave.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            holder = LockInfo.read(self.path)
            if holder is not None and holder.pid == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_status(root: Path) -> dict[str, Any] | None:
    """The lock file's holder and whether it is stale, for `verify`; None without a lock. A
    lock that cannot be read (empty, not a lock's JSON, a folder, a FIFO, a link) has
    `unreadable`: what it is; it is read twice, 0.2 s apart, as a writer does, since a
    lock being created is empty for a moment."""
    path = Path(root) / LOCK
    if not os.path.lexists(path):
        return None
    holder = LockInfo.read(path)
    if holder is None and _is_plain_file(path):
        time.sleep(0.2)
        holder = LockInfo.read(path)
    if holder is None:
        if not os.path.lexists(path):
            return None
        mode = os.lstat(path).st_mode
        what = "empty or not a writer lock's JSON" if stat.S_ISREG(mode) else kind_of(mode)
        return {"path": LOCK, "stale": None, "unreadable": what}
    alive = holder.alive()
    return {
        "path": LOCK,
        "pid": holder.pid,
        "host": holder.host,
        "command": holder.command,
        "started": holder.started,
        "stale": None if alive is None else not alive,
    }


def _is_plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


# ------------------------------------------------------------------ creating a new folder
#
# A new warehouse (ingest), an export or a merge is laid out in a temp sibling folder
# `.<name>.tmp-<random>` and renamed into place, so a crash never leaves half a folder at
# `<name>`. While it works, the temp folder holds a writer lock with the creator's pid: a
# folder whose creator was killed is recognised, reported by `verify <name>` and removed by
# the next run that creates `<name>`.

# A temp folder without a lock is dead once this old: its creator takes the lock right after
# making it, so only a kill in between (or an older version of this tool) leaves one.
UNLOCKED_CREATION_GRACE_S = 600


@dataclass(frozen=True)
class Creation:
    """A temp sibling folder of a folder being created (or left by a killed creator)."""

    path: Path
    command: str | None  # from its lock; None without a readable lock
    dead: bool  # its creator is gone: safe to remove


def creations(final: Path) -> list[Creation]:
    """The temp sibling folders of creations of `final`: live ones (a lock of a running
    process, or held on another host, or unreadable), and dead ones (a lock of a process
    gone from this host, or no lock and older than UNLOCKED_CREATION_GRACE_S)."""
    out = []
    for entry in sorted(Path(final).parent.glob(f".{glob.escape(Path(final).name)}.tmp-*")):
        if entry.is_symlink() or not entry.is_dir():
            continue
        lock = lock_status(entry)
        if lock is not None:
            dead = lock["stale"] is True
        else:
            try:
                dead = time.time() - entry.stat().st_mtime >= UNLOCKED_CREATION_GRACE_S
            except FileNotFoundError:
                continue
        command = None if lock is None else lock.get("command")
        out.append(Creation(entry, command, dead))
    return out


def remove_dead_creations(final: Path) -> list[Path]:
    """Delete the temp folders of earlier creations of `final` whose process was killed (a
    SIGKILL while laying out a warehouse, an export or a merge leaves one beside it); live
    ones are left alone. Returns the folders removed."""
    dead = {c.path.name for c in creations(final) if c.dead}
    remove_temp_entries(Path(final).parent, only=lambda name: name in dead)
    return [Path(final).parent / name for name in sorted(dead)]


@contextmanager
def creating(final: Path, command: str, file: bool = False) -> Iterator[Path]:
    """Lay out `final` in a new temp sibling folder, yielded; `file`: the body writes the
    one file `<folder>/<final.name>` instead (a zip). The folder holds a writer lock naming
    `command` while the body runs; then the lock is released and the folder (or the file) is
    renamed to `final`, which must not exist then (or be an empty folder). On any failure
    the temp folder is removed and nothing is left at `final`. Dead temp folders of earlier
    creations of `final` are removed first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_creations(final)
    root = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        root.chmod(0o755)  # mkdtemp makes it private; a warehouse is meant to be shared
        with WriterLock(root, f"{command} (creating)"):
            yield root
        made = root / final.name if file else root
        if final.is_dir() and not final.is_symlink() and not any(final.iterdir()):
            final.rmdir()
        if os.path.lexists(final):
            raise WarehouseError(f"{final} appeared while it was being made; nothing was written")
        if file:
            made.chmod(0o644)
        os.rename(made, final)
    finally:
        shutil.rmtree(root, ignore_errors=True)
