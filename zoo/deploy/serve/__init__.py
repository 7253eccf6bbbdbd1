"""zoo serve: exported models behind a real Triton server, with nginx at the edge.

server.py runs it; models.py finds and checks the models, process.py starts and stops
Triton through PyTriton, edge.py puts nginx (and njs) in front of its REST port.
"""

from zoo.deploy.serve.server import serve

__all__ = ["serve"]
