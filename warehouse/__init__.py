"""relation-warehouse: an activation warehouse for relation-specific neurons.

The stage packages (`warehouse.ingest`, `warehouse.store`, `warehouse.queries`,
`warehouse.analysis`) live in top-level folders of the repository; this package composes
them into the CLI (`warehouse.cli`) and the public Python API.
"""

__version__ = "0.1.0"
