"""The named errors, for users of the Python API: `from warehouse.errors import FormatError`.

They are defined in `warehouse.store.errors` (the bottom of the import layers, which every
stage imports); these are the same classes."""

from warehouse.store.errors import (
    DatasetError,
    FormatError,
    LockedError,
    MissingChunkError,
    MissingFileError,
    ModelError,
    QueryLimitError,
    SiteError,
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
