"""Where a warehouse lives: a local folder, or (read-only) any fsspec URL.

Readers go through a `Location` so that one code path serves a folder, `http(s)://`,
`s3://`, `gs://`, `memory://` and zip files (`W.zip`, `zip://::W.zip`, chained URLs such as
`zip://::https://host/W.zip`). Remote reads are lazy: a Zarr chunk or a Parquet footer and
row group is fetched only when a query touches it (fsspec range requests). Nothing here
writes: commands that change a warehouse call `require_local`, which refuses a remote one.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import posixpath
import stat
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from warehouse.store.errors import FormatError, MissingFileError, WarehouseError
from warehouse.store.files import loads_json
from warehouse.store.format import MANIFEST
from warehouse.store.whole_files import WHOLE_FILES

# Protocols that live in optional packages, and the extra that installs each.
# url -> whether its server answers byte-range reads, probed once per process.
_RANGES: dict[str, bool] = {}
# An http(s) file up to this size is read whole and kept (`Location.whole`).
SMALL_FILE = 5 * 2**20
_EXTRAS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "http": "aiohttp"}


def is_remote(target: str | Path | Location) -> bool:
    """True for an fsspec URL other than file:// (and for a zip file, which is read-only)."""
    if isinstance(target, Location):
        return target.fs is not None
    text = str(target)
    if "://" in text or "::" in text:
        return not (text.startswith("file://") and "::" not in text)
    return text.endswith(".zip") and Path(text).is_file()


def local_folder(target: str | Path, action: str) -> Path:
    """The local folder a command writes into; a URL or a zip file is refused (read-only)."""
    if is_remote(target):
        raise WarehouseError(_read_only(str(target), action))
    return Path(str(target).removeprefix("file://"))


# What an entry that is not a plain file or folder is, for messages.
_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISDIR, "a folder"),
)


def kind_of(mode: int) -> str:
    """'a plain file', 'a symbolic link', 'a FIFO', 'a socket', 'a device' or 'a folder'."""
    return next((name for test, name in _KINDS if test(mode)), "a plain file")


def require_regular(path: str | Path) -> os.stat_result:
    """The lstat of `path` when it is a plain file; FormatError for a link, FIFO, socket,
    device or folder. A warehouse holds plain files only: a link could lead a reader or an
    export to a file outside it (a private one), and reading a FIFO blocks forever."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise MissingFileError(f"{path} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(
            f"{path} is {kind_of(st.st_mode)}, not a plain file; a warehouse holds plain files "
            "only: replace it with the real file, or delete it"
        )
    return st


def open_regular(path: str | Path) -> IO[bytes]:
    """Open a plain file for reading; a link, FIFO, socket or device is refused without
    following or blocking on it (O_NOFOLLOW | O_NONBLOCK, then fstat)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            require_regular(path)
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        require_regular(path)  # names what it is
        raise FormatError(f"{path} changed while it was opened; run the command again")
    return os.fdopen(fd, "rb")


def require_outside(
    dest: str | Path,
    sources: list[str | Path],
    action: str,
    allow: str | None = None,
    writes: Collection[str] | None = None,
) -> None:
    """Refuse a destination inside a local source warehouse, or a source inside the
    destination where the command would write over it: a command never writes into its
    inputs. `allow` names the one folder of a warehouse the command may write (the report's
    `report/`); `writes` the names a command writes into an existing `dest` (None: it fills
    `dest` whole). Paths are resolved, so links and `..` do not hide where they lead."""
    if is_remote(str(dest)):
        return
    out = Path(str(dest).removeprefix("file://")).resolve()
    for src in sources:
        if "://" in str(src) or "::" in str(src):
            continue
        root = Path(str(src)).resolve()
        if out == root or root in out.parents:
            if allow is not None and out == root / allow:
                continue
            where = f", except into its {allow}/ folder" if allow else ""
            raise WarehouseError(
                f"{action} would write into its input {src} ({dest} is inside it); nothing "
                f"was written: choose a destination outside the warehouse{where}"
            )
        if out in root.parents and (writes is None or root.relative_to(out).parts[0] in writes):
            raise WarehouseError(
                f"{action} would write around its input {src} ({src} is inside {dest}); "
                "nothing was written: choose a destination that does not hold the warehouse"
            )


def _read_only(url: str, action: str) -> str:
    return (
        f"{url} is a remote or zipped warehouse, which is read-only; {action} writes into "
        "the warehouse: copy it to a local folder first (`warehouse export URL DEST`)"
    )


@dataclass(frozen=True)
class Location:
    """A warehouse root. `fs is None` means a local folder at `base` (plain os calls);
    otherwise `base` is the root path inside the fsspec filesystem `fs`."""

    url: str  # as the user gave it, for messages
    base: str
    fs: Any = None  # fsspec.AbstractFileSystem | None

    # ------------------------------------------------------------------ construction

    @classmethod
    def of(cls, target: str | Path | Location) -> Location:
        if isinstance(target, Location):
            return target
        text = str(target)
        if not is_remote(text):
            return cls(text, str(Path(text.removeprefix("file://"))))
        if "://" not in text and "::" not in text:  # a local .zip file
            text = f"zip://::{Path(text).resolve()}"
        import fsspec.core

        try:
            fs, base = fsspec.core.url_to_fs(text)
        except ImportError as e:
            proto = text.split("://", 1)[0].split("::")[-1]
            pkg = _EXTRAS.get(proto.removesuffix("s"), str(e))
            raise WarehouseError(
                f"{target}: reading {proto}:// needs the package {pkg!r}; "
                f"pip install 'relation-warehouse[remote]' (or {pkg})"
            ) from None
        except ValueError as e:  # unknown protocol
            raise WarehouseError(f"{target}: not a URL fsspec can open ({e})") from None
        except (OSError, FileNotFoundError) as e:
            raise FormatError(f"{target}: cannot open ({e})") from None
        if _is_http(fs):  # existence checks by HEAD, not by a GET of the whole file
            from warehouse.store.http_fs import HeadHTTPFileSystem

            fs = HeadHTTPFileSystem(**fs.storage_options)
        if getattr(fs, "protocol", None) in ("zip", ("zip",)):
            _check_zip_entries(str(target), fs.zip)
        return cls(str(target), base.rstrip("/"), fs)

    # ------------------------------------------------------------------ properties

    @property
    def remote(self) -> bool:
        return self.fs is not None

    @property
    def local(self) -> Path:
        """The folder of a local warehouse (callers check `remote` first)."""
        if self.fs is not None:
            raise WarehouseError(f"{self.url} is not a local folder")
        return Path(self.base)

    def __str__(self) -> str:
        return self.url

    def path(self, rel: str) -> str:
        """The full path of `rel` (relative, '/'-separated) in this location's filesystem."""
        if self.fs is None:
            return os.path.join(self.base, rel)
        return posixpath.join(self.base, rel) if self.base else rel

    def require_local(self, action: str) -> Path:
        """The local folder, or a clear refusal: remote warehouses are read-only."""
        if self.fs is not None:
            raise WarehouseError(_read_only(self.url, action))
        return Path(self.base)

    # ------------------------------------------------------------------ reading

    def exists(self, rel: str = "") -> bool:
        p = self.path(rel) if rel else self.base
        if self.fs is None:
            return os.path.exists(p)
        try:
            return bool(self.fs.exists(p))  # over http(s) a HEAD (`HeadHTTPFileSystem`)
        except (OSError, ValueError):
            return False

    def isfile(self, rel: str) -> bool:
        """Whether something other than a folder is at `rel` (locally a link or a FIFO counts:
        reading it then says what it is, instead of calling it missing)."""
        if self.fs is None:
            try:
                return not stat.S_ISDIR(os.lstat(self.path(rel)).st_mode)
            except OSError:
                return False
        try:
            return bool(self.fs.isfile(self.path(rel)))
        except (OSError, ValueError):
            return False

    def file(self, rel: str) -> str:
        """The full path of file `rel`, checked: relative and without `..`; locally, every
        folder on the way a real folder and the file a plain file (`require_regular`)."""
        parts = rel.split("/")
        if not rel or rel.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise FormatError(f"{self.url}: {rel!r} is not a relative path inside the warehouse")
        full = self.path(rel)
        if self.fs is None:
            folder = self.base
            for part in parts[:-1]:
                folder = os.path.join(folder, part)
                try:
                    mode = os.lstat(folder).st_mode
                except FileNotFoundError:
                    raise MissingFileError(f"{self.url}: {rel} is missing") from None
                if not stat.S_ISDIR(mode):
                    raise FormatError(
                        f"{self.url}: {os.path.relpath(folder, self.base)} is {kind_of(mode)}, "
                        "not a folder; a warehouse holds plain files and folders only"
                    )
            if not os.path.lexists(full):
                raise MissingFileError(f"{self.url}: {rel} is missing")
            require_regular(full)
        return full

    def read_bytes(self, rel: str) -> bytes:
        try:
            if self.fs is None:
                return Path(self.file(rel)).read_bytes()
            return self.whole(self.file(rel))
        except FileNotFoundError:
            raise MissingFileError(f"{self.url}: {rel} is missing") from None
        except IsADirectoryError:
            raise FormatError(f"{self.url}: {rel} is a folder, not a file") from None

    def read_json(self, rel: str) -> Any:
        data = self.read_bytes(rel)
        try:
            return loads_json(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FormatError(f"{self.url}: {rel} is not valid JSON ({e})") from None

    def supports_ranges(self) -> bool:
        """Whether the server answers byte-range reads. Plain `python -m http.server` does
        not: it sends the whole file, and fsspec's seekable files then refuse to work."""
        if self.fs is None:
            return True
        if self.url not in _RANGES:
            try:
                got = self.fs.cat_file(self.path(MANIFEST), start=0, end=2)
                _RANGES[self.url] = len(got) == 2
                if len(got) != 2:  # the server sent the whole manifest: keep it
                    WHOLE_FILES.put(self.path(MANIFEST), got)
            except Exception:  # the real read will report what is wrong
                _RANGES[self.url] = True
        return _RANGES[self.url]

    def whole(self, full: str) -> bytes:
        """The whole remote file at `full`, fetched once per process where that is safe: from
        a server without byte ranges always (every read costs the whole file), over http(s)
        a file up to `SMALL_FILE` whose HEAD names a version (ETag or Last-Modified)."""
        if not self.supports_ranges():
            return WHOLE_FILES.get(full, lambda: self.fs.cat_file(full))
        key, _ = self._small_key(full)
        if key is None:
            return self.fs.cat_file(full)
        return WHOLE_FILES.get(key, lambda: self.fs.cat_file(full))

    def open_full(self, full: str) -> IO[bytes]:
        """A seekable remote file: kept bytes (see `whole`), or fsspec's file that reads by
        range on demand."""
        if not self.supports_ranges():
            return io.BytesIO(self.whole(full))
        key, size = self._small_key(full)
        if key is not None:
            return io.BytesIO(WHOLE_FILES.get(key, lambda: self.fs.cat_file(full)))
        return self.fs.open(full, "rb", size=size) if size else self.fs.open(full, "rb")

    def _small_key(self, full: str) -> tuple[str | None, int | None]:
        """(cache key, size) of an http(s) file, from one HEAD: the key names the file's
        version, and is None for a file larger than `SMALL_FILE` or one without a version.
        fsspec would fetch a small file whole at its first read anyway (its block is 5 MiB)."""
        if not _is_http(self.fs):
            return None, None
        info = self.fs.info(full)
        size, tag = info.get("size"), info.get("ETag") or info.get("Last-Modified")
        if size is None or not tag or size > SMALL_FILE:
            return None, size
        return f"{full}#{size}:{tag}", size

    def open(self, rel: str) -> IO[bytes]:
        """A seekable binary file; remote files read by range on demand (or whole, from a
        server without range requests)."""
        try:
            if self.fs is None:
                return open_regular(self.file(rel))
            return self.open_full(self.file(rel))
        except FileNotFoundError:
            raise MissingFileError(f"{self.url}: {rel} is missing") from None

    def listdir(self, rel: str) -> list[str]:
        """Names of the files directly in folder `rel` (sorted; [] when absent). A link,
        FIFO, socket or device there (or in its place) is refused (FormatError), never
        listed or skipped."""
        if self.fs is None and os.path.lexists(self.path(rel)):
            mode = os.lstat(self.path(rel)).st_mode
            if not stat.S_ISDIR(mode):
                raise FormatError(
                    f"{self.url}: {rel} is {kind_of(mode)}, not a folder; a warehouse holds "
                    "plain files and folders only: replace it with the real folder"
                )
        entries = self.entries(rel)
        for name, kind in entries.items():
            if kind not in ("a plain file", "a folder"):
                raise FormatError(
                    f"{self.url}: {rel}/{name} is {kind}, not a plain file; a warehouse holds "
                    "plain files only: replace it with the real file, or delete it"
                )
        return sorted(n for n, kind in entries.items() if kind == "a plain file")

    def entries(self, rel: str) -> dict[str, str]:
        """What lies directly in folder `rel`: name -> `kind_of` (remote: plain files and
        folders only); {} when there is no such folder (or `rel` is not a real one)."""
        if self.fs is None:
            d = self.path(rel)
            try:
                if stat.S_ISLNK(os.lstat(d).st_mode):
                    return {}
                with os.scandir(d) as it:
                    return {e.name: kind_of(e.stat(follow_symlinks=False).st_mode) for e in it}
            except (FileNotFoundError, NotADirectoryError):
                return {}
        try:
            found = self.fs.ls(self.path(rel), detail=True)
        except (FileNotFoundError, NotADirectoryError, OSError, ValueError):
            return {}
        out = {}
        for e in found:
            name = posixpath.basename(e["name"].rstrip("/"))
            if name not in ("", ".", ".."):
                out[name] = "a plain file" if e.get("type") == "file" else "a folder"
        return out

    def walk(self) -> Iterator[str]:
        """Relative paths of every file under the root."""
        if self.fs is None:
            for dirpath, _, names in os.walk(self.base):
                for n in names:
                    yield os.path.relpath(os.path.join(dirpath, n), self.base)
            return
        prefix = self.base.rstrip("/") + "/" if self.base else ""
        for full in self.fs.find(self.base or "/"):
            name = full.lstrip("/") if not prefix else full
            yield name[len(prefix) :] if prefix and name.startswith(prefix) else name

    # ------------------------------------------------------------------ readers

    def zarr_store(self, rel: str) -> Any:
        """A read-only zarr store of the array or group at `rel`."""
        if self.fs is None:
            return plain_local_store()(self.path(rel), read_only=True)
        from zarr.storage import FsspecStore

        if self.supports_ranges():
            return FsspecStore(_async(self.fs), read_only=True, path=self.path(rel))
        store = _whole_file_store()(_async(self.fs), read_only=True, path=self.path(rel))
        store.location = self
        return store

    def arrow_fs(self) -> Any:
        """This location's filesystem for pyarrow (None for a local folder)."""
        if self.fs is None:
            return None
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        location = self

        class Handler(FSSpecHandler):  # files opened as `open_full` opens them
            def open_input_file(self, path: str) -> Any:
                import pyarrow as pa

                return pa.PythonFile(location.open_full(path), mode="r")

        return PyFileSystem(Handler(self.fs))


def _check_zip_entries(url: str, zf: Any) -> None:
    """Refuse a zip holding an entry that is not a plain file or folder (a symbolic link,
    a FIFO, a device: its mode bits say so) or whose name is absolute or climbs out with
    `..`: unpacked or exported, such an entry would lead outside the folder."""
    for info in zf.infolist():
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise FormatError(
                f"{url}: zip entry {name!r} is not a relative path inside the warehouse; "
                "a warehouse zip holds relative names only"
            )
        mode = info.external_attr >> 16  # type bits 0: a plain file (permissions only)
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise FormatError(
                f"{url}: zip entry {name!r} is {kind_of(mode)}, not a plain file; a warehouse "
                "zip holds plain files only"
            )


def _async(fs: Any) -> Any:
    """zarr's FsspecStore needs an asynchronous filesystem: an async-capable one (http, s3,
    gcs) is re-created in async mode, a synchronous one (memory, zip) is wrapped."""
    if fs.async_impl and fs.asynchronous:
        return fs
    if fs.async_impl:
        import fsspec

        spec = json.loads(fs.to_json())
        spec["asynchronous"] = True
        return fsspec.AbstractFileSystem.from_json(json.dumps(spec))
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    return AsyncFileSystemWrapper(fs, asynchronous=True)


@functools.cache
def plain_local_store() -> type:
    """zarr's LocalStore, reading plain files only: a chunk or zarr.json that is a link,
    FIFO or device is refused (`require_regular`) instead of followed or blocked on."""
    from zarr.storage import LocalStore

    class PlainLocalStore(LocalStore):
        async def get(self, key, prototype=None, byte_range=None):  # type: ignore[override]
            if os.path.lexists(Path(self.root) / key):
                Location(str(self.root), str(self.root)).file(key)  # folders and file plain
            return await super().get(key, prototype, byte_range)

    return PlainLocalStore


@functools.cache
def _whole_file_store() -> type:
    import asyncio

    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import FsspecStore

    class WholeFileStore(FsspecStore):
        """An FsspecStore for a server that ignores byte ranges (it sends the whole file):
        a shard's index and its chunks are byte ranges of one file, so the file is fetched
        whole, once (`Location.whole`, in a worker thread: its per-key lock waits for a
        fetch already running), and the ranges are cut from it here."""

        location: Location

        async def get(self, key, prototype=None, byte_range=None):  # type: ignore[override]
            full = f"{self.path}/{key}" if self.path else key
            try:
                whole = await asyncio.to_thread(self.location.whole, full)
            except FileNotFoundError:
                return None
            view = memoryview(whole)
            if isinstance(byte_range, RangeByteRequest):
                view = view[byte_range.start : byte_range.end]
            elif isinstance(byte_range, OffsetByteRequest):
                view = view[byte_range.offset :]
            elif isinstance(byte_range, SuffixByteRequest):
                view = view[len(view) - byte_range.suffix :]
            elif byte_range is not None:
                raise ValueError(f"unexpected byte range {byte_range}")
            return (prototype or default_buffer_prototype()).buffer.from_bytes(view)

    return WholeFileStore


def _is_http(fs: Any) -> bool:
    protocol = getattr(fs, "protocol", ())
    return bool({"http", "https"} & set((protocol,) if isinstance(protocol, str) else protocol))
