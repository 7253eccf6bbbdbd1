"""zoo serve: exported models behind a real Triton server, with nginx at the edge."""

from zoo.deploy.serve.server import serve

__all__ = ["serve"]
