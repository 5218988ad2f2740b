"""Named errors of the warehouse on disk. Every error this tool raises on purpose derives
from `WarehouseError`; the CLI turns each into a one-line message and a non-zero exit.
`warehouse.errors` re-exports these beside the errors of the other stages."""


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
