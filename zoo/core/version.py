"""zoo's version: written into every ONNX file's metadata and printed by `zoo --version`."""

__version__ = "0.1.0"
