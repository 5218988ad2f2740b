"""Named errors. The CLI turns each into a one-line message and a non-zero exit.

The warehouse's own (format, lock, missing files) live in `warehouse.store.errors` and are
re-exported here, so `from warehouse.errors import FormatError` names the same class."""

from warehouse.store.errors import (
    FormatError,
    LockedError,
    MissingChunkError,
    MissingFileError,
    WarehouseError,
)

__all__ = [
    "DatasetError",
    "FormatError",
    "LockedError",
    "MissingChunkError",
    "MissingFileError",
    "ModelError",
    "QueryLimitError",
    "SiteError",
    "WarehouseError",
]


class DatasetError(WarehouseError):
    """A relation dataset file is malformed or a requested relation/language is unknown."""


class ModelError(WarehouseError):
    """A model cannot be found, loaded, or is of an unsupported architecture."""


class SiteError(WarehouseError):
    """An activation site or layer is unknown for the model's architecture."""


class QueryLimitError(WarehouseError):
    """A query ran past its memory limit or its timeout and was stopped."""
