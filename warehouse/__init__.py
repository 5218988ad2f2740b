"""relation-warehouse: an activation warehouse for relation-specific neurons.

The stage packages (`warehouse.ingest`, `warehouse.store`, `warehouse.queries`,
`warehouse.analysis`) live in top-level folders of the repository; this package composes
them into the CLI (`warehouse.cli`) and the public Python API:

    from warehouse import Warehouse
    Warehouse.open("W").sql("select relation, count(*) from prompts group by relation")

`Warehouse` is imported on first use, so `import warehouse` (and the CLI's start) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from warehouse.store.version import __version__

if TYPE_CHECKING:
    from warehouse.api import Warehouse

__all__ = ["Warehouse", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Warehouse":
        from warehouse.api import Warehouse

        return Warehouse
    raise AttributeError(f"module 'warehouse' has no attribute {name!r}")
