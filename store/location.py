"""Where a warehouse lives: a local folder, or (read-only) any fsspec URL.

Readers go through a `Location` so that one code path serves a folder, `http(s)://`,
`s3://`, `gs://`, `memory://` and zip files (`W.zip`, `zip://::W.zip`, chained URLs such as
`zip://::https://host/W.zip`). Remote reads are lazy: a Zarr chunk or a Parquet footer and
row group is fetched only when a query touches it (fsspec range requests). Nothing here
writes: commands that change a warehouse call `require_local`, which refuses a remote one.
"""

from __future__ import annotations

import functools
import io
import json
import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from warehouse.errors import FormatError, WarehouseError

# Protocols that live in optional packages, and the extra that installs each.
# url -> whether its server answers byte-range reads, probed once per process.
_RANGES: dict[str, bool] = {}
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


def require_regular(path: str | Path) -> os.stat_result:
    """The lstat of `path` when it is a plain file; FormatError for a link, FIFO, socket,
    device or folder (or a missing file). Uses lstat only, so it never follows or blocks on
    what it refuses: a link could lead a reader to a file outside the warehouse, and
    reading a FIFO blocks forever."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise FormatError(f"{path} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
        raise FormatError(
            f"{path} is {kind}, not a plain file; a warehouse holds plain files only: "
            "replace it with the real file, or delete it"
        )
    return st


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISDIR, "a folder"),
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
            return bool(self.fs.exists(p))
        except (OSError, ValueError):
            return False

    def isfile(self, rel: str) -> bool:
        if self.fs is None:
            return os.path.isfile(self.path(rel))
        try:
            return bool(self.fs.isfile(self.path(rel)))
        except (OSError, ValueError):
            return False

    def read_bytes(self, rel: str) -> bytes:
        try:
            if self.fs is None:
                return Path(self.path(rel)).read_bytes()
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            raise FormatError(f"{self.url}: {rel} is missing") from None
        except IsADirectoryError:
            raise FormatError(f"{self.url}: {rel} is a folder, not a file") from None

    def read_json(self, rel: str) -> Any:
        data = self.read_bytes(rel)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FormatError(f"{self.url}: {rel} is not valid JSON ({e})") from None

    def supports_ranges(self) -> bool:
        """Whether the server answers byte-range reads. Plain `python -m http.server` does
        not: it sends the whole file, and fsspec's seekable files then refuse to work."""
        if self.fs is None:
            return True
        if self.url not in _RANGES:
            try:
                got = self.fs.cat_file(self.path("manifest.json"), start=0, end=2)
                _RANGES[self.url] = len(got) == 2
            except Exception:  # the real read will report what is wrong
                _RANGES[self.url] = True
        return _RANGES[self.url]

    def open(self, rel: str) -> IO[bytes]:
        """A seekable binary file; remote files read by range on demand (or whole, from a
        server without range requests)."""
        try:
            if self.fs is None:
                return open(self.path(rel), "rb")
            if not self.supports_ranges():
                return io.BytesIO(self.fs.cat_file(self.path(rel)))
            return self.fs.open(self.path(rel), "rb")
        except FileNotFoundError:
            raise FormatError(f"{self.url}: {rel} is missing") from None

    def listdir(self, rel: str) -> list[str]:
        """Names of the files directly in folder `rel` (sorted; [] when absent)."""
        if self.fs is None:
            d = self.path(rel)
            if not os.path.isdir(d):
                return []
            return sorted(n for n in os.listdir(d) if os.path.isfile(os.path.join(d, n)))
        try:
            entries = self.fs.ls(self.path(rel), detail=True)
        except (FileNotFoundError, NotADirectoryError, OSError, ValueError):
            return []
        return sorted(
            posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file"
        )

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
            from zarr.storage import LocalStore

            return LocalStore(self.path(rel), read_only=True)
        from zarr.storage import FsspecStore

        if self.supports_ranges():
            return FsspecStore(_async(self.fs), read_only=True, path=self.path(rel))
        return _whole_file_store()(_async(self.fs), read_only=True, path=self.path(rel))

    def arrow_fs(self) -> Any:
        """This location's filesystem for pyarrow (None for a local folder)."""
        if self.fs is None:
            return None
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self.fs))


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
def _whole_file_store() -> type:
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
    from zarr.storage import FsspecStore

    class WholeFileStore(FsspecStore):
        """An FsspecStore for a server that ignores byte ranges (it sends the whole file):
        a shard's index and its chunks are byte ranges of one file, so the file is fetched
        whole and the ranges are cut from it here. The last few files are kept, so the
        chunks of one shard cost one fetch."""

        _keep = 2

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self._recent: dict[str, Any] = {}

        async def get(self, key, prototype, byte_range=None):  # type: ignore[override]
            if byte_range is None:
                return await super().get(key, prototype)
            whole = self._recent.get(key)
            if whole is None:
                whole = await super().get(key, prototype)
                if whole is None:
                    return None
                self._recent[key] = whole
                while len(self._recent) > self._keep:
                    self._recent.pop(next(iter(self._recent)))
            if isinstance(byte_range, RangeByteRequest):
                return whole[byte_range.start : byte_range.end]
            if isinstance(byte_range, OffsetByteRequest):
                return whole[byte_range.offset :]
            if isinstance(byte_range, SuffixByteRequest):
                return whole[len(whole) - byte_range.suffix :]
            raise ValueError(f"unexpected byte range {byte_range}")

    return WholeFileStore
