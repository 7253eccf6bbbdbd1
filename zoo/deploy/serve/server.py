"""`zoo serve`: exported models served over the Open Inference Protocol by a real Triton server.

PyTriton (`nvidia-pytriton`) starts the Triton Inference Server it bundles (2.51), on a
model repository zoo writes for the occasion (zoo.deploy.triton): per model, the
config.pbtxt generated from the contract, with Triton's Python backend running the run's
model.onnx with onnxruntime inside the backend's stub processes (process.py). Triton owns
everything on the wire: REST and gRPC (KServe v2 / Open Inference Protocol), dynamic
batching, the health, ready and metadata endpoints, Prometheus metrics, the
classification extension (labels.txt), and the checking of every request against the
model's configuration (input name, datatype, shape, batch size), which it answers with a
400 before our code runs. Where nginx is installed it takes the REST port (edge.py); zoo's
gRPC edge always takes the gRPC port (grpc_edge.py): both refuse shapes that do not fit the
data carried, which Triton 2.51 would size its buffers from (or overflow on).

Not PyTriton's `bind()`: a bound callable runs in this process, so every request crossed
the stub, ZeroMQ and PyTriton's shared-memory tensor store (a process of its own) twice;
at concurrency 32 that served 0.64x the peer's gRPC requests/s, the Python backend 2.8x
(benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import tempfile
import time
from pathlib import Path

from zoo.core import signals
from zoo.core.contract import BATCH_DIM, INPUT_NAME
from zoo.core.errors import ServerError, UsageError
from zoo.deploy.defaults import GRPC_PORT, HOST, HTTP_PORT, INSTANCES, METRICS_PORT
from zoo.deploy.serve import edge, grpc_edge, process, stub_env
from zoo.deploy.serve.models import Served, find_models, write_repository
from zoo.deploy.serve_card import curl_command


def serve(targets, *, host=HOST, port=HTTP_PORT, grpc_port=GRPC_PORT, metrics_port=METRICS_PORT,
          instances=INSTANCES, verbose=False, log=print, variant=None) -> None:
    """Serve the models until Ctrl-C or SIGTERM; then stop Triton (and nginx) and return.

    Raises:
        UsageError: no servable model, a port in use, or the serve extra not installed.
        ServerError: Triton or nginx did not start, or one of them stopped while serving.
    """
    served = find_models(targets, variant)
    _check_ports(host, port, grpc_port, metrics_port)
    pytriton = process.load_pytriton()
    logs = tempfile.TemporaryDirectory(prefix="zoo-serve-")
    work = Path(logs.name)
    log_file = None if verbose else work / "triton.log"  # Triton's own log, shown on failure
    nginx = edge.nginx()
    njs = edge.njs_module() if nginx else None
    triton_http = (HOST, process.free_port()) if nginx else (host, port)  # behind nginx: loopback only
    triton_grpc = (HOST, process.free_port(avoid={triton_http[1], port, grpc_port, metrics_port}))  # behind zoo's gRPC edge: loopback only
    triton = process.create(pytriton, work / "models", http=triton_http, grpc=triton_grpc, host=host,
                            metrics_port=metrics_port, verbose=verbose, log_file=log_file)
    with signals.on_signal(_stop_serving), contextlib.ExitStack() as parts:  # stopped last to first
        parts.callback(logs.cleanup)
        parts.callback(triton.stop)
        try:
            write_repository(served, work / "models", instances, stub_env.create(work / "stub-env"))
            process.start(triton, log_file)
            proxy = None
            if nginx:
                proxy = edge.start(nginx, work / "nginx", host, port, triton_http[1], njs)
                parts.callback(edge.stop, proxy)
            parts.callback(grpc_edge.stop, grpc_edge.start(host, grpc_port, triton_grpc[1]))  # after every fork
            _banner(log, served, host, (port, grpc_port, metrics_port), proxy, njs)
            _wait(triton, proxy, log_file, work / "nginx", process.stubs())
        except KeyboardInterrupt:
            pass
    log("stopped")


def _stop_serving(signum, frame):
    """SIGTERM, like Ctrl-C, stops the server: Triton and nginx are stopped, and serve returns."""
    raise KeyboardInterrupt


def _check_ports(host: str, port: int, grpc_port: int, metrics_port: int) -> None:
    """Each a port number, all different, none in use on `host`; otherwise a UsageError naming its option."""
    ports = {"--port": port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
    if len(set(ports.values())) != len(ports):
        raise UsageError(f"--port, --grpc-port and --metrics-port must differ; received {port}, {grpc_port}, {metrics_port}")
    for flag, port in ports.items():
        if not 0 < port < 65536:
            raise UsageError(f"{flag} {port}: not a port number (1-65535)")
        with contextlib.closing(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is not "in use"
            try:
                s.bind((host, port))
            except OSError as e:
                why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
                raise UsageError(f"{host}:{port} {why}; choose another {flag}") from None


def urls(served: list[Served], host: str, port: int, grpc_port: int, metrics_port: int) -> list[str]:
    """The banner's lines: where each protocol listens, and each model's input and outputs."""
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::1", "::") else host
    lines = [f"  REST     http://{shown}:{port}/v2/models/<name>/infer  (health: /v2/health/ready, metadata: /v2/models/<name>)",
             f"  gRPC     {shown}:{grpc_port}  (inference.GRPCInferenceService; shapes checked against the data first)",
             f"  metrics  http://{shown}:{metrics_port}/metrics"]
    return lines + [f"  model    {s.name}: {_inputs(s)} -> {', '.join(s.contract.outputs)}  ({s.onnx})" for s in served]


def _inputs(s: Served) -> str:
    """A model's inputs for the banner: `input [batch <= 64, 8, 8] FP32`, or a table's one per column."""
    c = s.contract
    if c.is_table:
        return (f"{len(c.columns)} inputs [{BATCH_DIM} <= {s.max_batch_size}, 1] "
                f"({', '.join(f'{n} {c.oip_dtype(n)}' for n, _, _ in c.columns)})")
    return f"{INPUT_NAME} [{BATCH_DIM} <= {s.max_batch_size}, {', '.join(map(str, c.input_shape))}] {c.oip_dtype(INPUT_NAME)}"


def _banner(log, served: list[Served], host: str, ports: tuple[int, int, int], proxy, njs) -> None:
    """What zoo serve prints once every model is loaded: URLs, models, an example request, the edge."""
    log(f"Triton {process.triton_version()} is serving {len(served)} model(s) over the Open Inference Protocol:")
    for line in urls(served, host, *ports):
        log(line)
    log("example request:")
    log("  " + curl_command(served[0].contract, host="localhost" if host == HOST else host, port=ports[0]))
    if proxy is None:
        log("warning: no nginx, so REST request bodies are not limited and Triton 2.51 dies on one of about "
            "4 MiB; install nginx (apt-get install nginx-light) and zoo serve puts it in front")
    else:
        log(f"  (REST through nginx: request bodies over {edge.MAX_BODY // (1024 * 1024)} MiB get a 413"
            + (", requests Triton cannot parse a 400)" if njs else
               "; without nginx's njs module, requests Triton cannot parse get its 500: "
               "apt-get install libnginx-mod-http-js)"))
    log("Ctrl-C or SIGTERM stops the server.")


def _wait(triton, proxy, log_file: Path | None, nginx_folder: Path, stubs: dict) -> None:
    """Until Ctrl-C or SIGTERM (a KeyboardInterrupt); a ServerError if Triton, nginx or one of
    the Python backend's stub processes (`stubs`: pid -> model) stops first.

    A dead stub is not replaced by Triton 2.51: half the requests then fail ("Stub process
    ... is not healthy") while /v2/health/ready still says 200. zoo serve stops the whole
    server instead, with the reason, rather than serve half a model and call it ready.
    """
    while triton.is_alive() and (proxy is None or proxy.poll() is None):
        dead = sorted(set(stubs) - set(process.stubs()))
        if dead and triton.is_alive():
            raise ServerError(f"Triton's Python-backend stub process {dead[0]} ({stubs[dead[0]]}) died (killed by "
                              f"a signal or the kernel's OOM killer); zoo serve stopped the whole server rather "
                              f"than answer half the requests: start it again")
        time.sleep(0.5)
    which = "Triton" if not triton.is_alive() else "nginx"
    raise ServerError(f"{which} stopped unexpectedly"
                      f"{process.log_tail(log_file) if which == 'Triton' else ': ' + edge.last_error(nginx_folder)}"
                      f"; rerun with --verbose for Triton's full log")
