"""Where zoo's servers listen and how many model instances they run, unless told otherwise.

One place: the library's signatures (zoo.deploy.serve, zoo.deploy.web, the card's example
requests) and the CLI's `zoo serve` and `zoo web` options all read these. Only constants:
the CLI imports this module when it starts.
"""

HOST = "127.0.0.1"  # loopback unless asked: a model server is not exposed by accident
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002  # Triton's defaults
# Model instances per model: each a stub process of Triton's Python backend with its own
# onnxruntime session, so that many batches are in flight at once.
INSTANCES = 2
WEB_PORT = 8000  # zoo web's page server, on 127.0.0.1
