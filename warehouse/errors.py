"""Named errors. The CLI turns each into a one-line message and a non-zero exit."""


class WarehouseError(Exception):
    """Base of every error this tool raises on purpose (bad input, bad data, bad state)."""


class DatasetError(WarehouseError):
    """A relation dataset file is malformed or a requested relation/language is unknown."""


class ModelError(WarehouseError):
    """A model cannot be found, loaded, or is of an unsupported architecture."""


class SiteError(WarehouseError):
    """An activation site or layer is unknown for the model's architecture."""


class FormatError(WarehouseError):
    """A warehouse folder is missing, corrupt, of another version, or inconsistent."""


class QueryLimitError(WarehouseError):
    """A query ran past its memory limit or its timeout and was stopped."""
