"""Named errors, the bottom of the import layers: every stage raises them. Every error this
tool raises on purpose derives from `WarehouseError`; the CLI turns each into a one-line
message and a non-zero exit. `warehouse.store.errors` re-exports them for users of the API."""


class WarehouseError(Exception):
    """Base of every error this tool raises on purpose (bad input, bad data, bad state)."""


class FormatError(WarehouseError):
    """A warehouse folder is missing, corrupt, of another version, or inconsistent."""


class MissingFileError(FormatError):
    """A file a warehouse should hold is not there."""


class MissingChunkError(FormatError):
    """A chunk file that must exist is absent (zarr would read it as zeros)."""


class LockedError(WarehouseError):
    """Another process is writing this warehouse."""


class DatasetError(WarehouseError):
    """A relation dataset file is malformed or a requested relation/language is unknown."""


class ModelError(WarehouseError):
    """A model cannot be found, loaded, or is of an unsupported architecture."""


class SiteError(WarehouseError):
    """An activation site or layer is unknown for the model's architecture."""


class QueryLimitError(WarehouseError):
    """A query ran past its memory limit or its timeout and was stopped."""
