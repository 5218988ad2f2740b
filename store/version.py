"""The tool's version: written into every manifest and sidecar a run makes (`tool_version`)."""

__version__ = "0.1.0"
