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
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from warehouse.errors import WarehouseError

LOCK = ".lock"


class LockedError(WarehouseError):
    """Another process is writing this warehouse."""


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
        """The lock's holder, or None when the file is gone or unreadable (being written)."""
        try:
            d = json.loads(path.read_text())
            ct = d.get("create_time")
            return cls(
                int(d["pid"]),
                str(d["host"]),
                str(d["command"]),
                str(d["started"]),
                None if ct is None else float(ct),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
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
    """The lock file's holder and whether it is stale, for `verify`; None without a lock."""
    path = Path(root) / LOCK
    if not path.exists():
        return None
    holder = LockInfo.read(path)
    if holder is None:
        return {"path": LOCK, "stale": None}
    alive = holder.alive()
    return {
        "path": LOCK,
        "pid": holder.pid,
        "host": holder.host,
        "command": holder.command,
        "started": holder.started,
        "stale": None if alive is None else not alive,
    }
