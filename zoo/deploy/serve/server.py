"""`zoo serve`: exported models served over the Open Inference Protocol by a real Triton server.

PyTriton (`nvidia-pytriton`) starts the Triton Inference Server it bundles (2.51), on a
model repository zoo writes for the occasion: per model, the config.pbtxt zoo.triton
generates from the contract, with Triton's Python backend running zoo.triton_backend,
which runs the run's model.onnx with onnxruntime inside the backend's stub processes (one
per instance). Triton owns everything on the wire: REST and gRPC (KServe v2 / Open
Inference Protocol), dynamic batching, the health, ready and metadata endpoints,
Prometheus metrics, the classification extension (labels.txt), and the checking of every
request against the model's configuration (input name, datatype, shape, batch size),
which it answers with a 400 before our code runs.

Not PyTriton's `bind()`: a bound callable runs in this process, so every request crossed
the stub, ZeroMQ and PyTriton's shared-memory tensor store (a process of its own) twice;
at concurrency 32 that served 0.64x the peer's gRPC requests/s, the Python backend 2.8x
(benchmarks/RESULTS.md).

The edge: Triton 2.51's HTTP server dies on a body of about 4 MiB, so where nginx is
installed it listens on the REST port, limits bodies (413) and proxies to Triton on a
private loopback port. Triton 2.51 also answers a request it cannot parse (malformed
JSON, `data` not matching its `shape`) with a 500; with nginx's njs module the edge
turns those answers, and only those, into a 400 with Triton's message (serve_edge.js).

Traps, handled here and in zoo.triton_backend (see /work/shared/PITFALLS.md):
- The Python-backend stub can load another libpython than the running interpreter's;
  the interpreter's LIBDIR goes first on LD_LIBRARY_PATH.
- The stub bundled with nvidia-pytriton 0.7 was built with a pybind11 that predates
  NumPy 2 (it reads dtype sizes through the NumPy 1 ABI, so every tensor it converts has
  0 bytes). Under NumPy 2 the backend moves tensors by DLPack, which needs no NumPy ABI.
- Triton loads every model of the repository before it reports ready (explicit model
  control, load-model *), so zoo serve prints its banner only once they are loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import signal
import socket
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from zoo.core.contract import BATCH_DIM, INPUT_NAME, SPEC_FILE, Contract
from zoo.core.errors import UsageError, ZooError
from zoo.deploy import triton as repo_format

HOST = "127.0.0.1"  # loopback unless asked: a model server is not exposed by accident
EXIT_TIMEOUT_S = 5  # how long Triton waits for in-flight requests when stopping
# Triton 2.51's HTTP server dies on a request body of about 4 MiB (3.5 MiB is answered); in front
# of it nginx answers bodies over MAX_BODY with a 413. A full batch of 64 float32 28x28 images
# in the protocol's JSON is about 1 MiB; larger payloads belong in several requests or on gRPC.
MAX_BODY = 3 * 1024 * 1024
# Model instances per model: each a Python callable with its own onnxruntime session, so one
# batch can run while the next crosses PyTriton's IPC (Triton -> stub -> ZeroMQ -> us).
INSTANCES = 2
INSTALL_HINT = ("install the serve extra: pip install -e '.[serve]' && pip install --no-deps 'nvidia-pytriton==0.7.0' "
                "(nvidia-pytriton declares numpy<2; see .ci/setup-serve.sh)")


@dataclass(frozen=True)
class Served:
    """One model to serve: its ONNX file, its contract and its batching settings."""

    onnx: Path
    contract: Contract
    max_batch_size: int = repo_format.MAX_BATCH_SIZE
    queue_delay_us: int = repo_format.QUEUE_DELAY_US

    @property
    def name(self) -> str:
        return self.contract.name


def _read_config(path: Path):
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UsageError(f"reading {path} needs tritonclient: {INSTALL_HINT}") from None
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError) as e:
        raise UsageError(f"{path}: not a readable Triton model configuration ({str(e)[:200]}); "
                         f"rewrite it with `zoo export RUN --triton`") from None


def _from_repository(repo: Path) -> list[Served]:
    served = []
    for config_path in sorted(repo.glob(f"*/{repo_format.CONFIG}")):
        model_dir = config_path.parent
        config = _read_config(config_path)
        if config.name and config.name != model_dir.name:
            raise UsageError(f"{config_path}: name {config.name!r} differs from its folder {model_dir.name!r}; "
                             f"Triton needs them equal")
        versions = sorted((int(p.name), p) for p in model_dir.iterdir() if p.name.isdigit() and
                          (p / repo_format.MODEL_FILE).is_file())
        if not versions:
            raise UsageError(f"{model_dir}: no version folder with {repo_format.MODEL_FILE} "
                             f"(expected {model_dir}/{repo_format.VERSION}/{repo_format.MODEL_FILE})")
        onnx = versions[-1][1] / repo_format.MODEL_FILE
        contract = Contract.from_onnx(onnx)
        if contract.name != model_dir.name:  # serve it under the repository's name, as Triton would
            contract = dataclasses.replace(contract, name=model_dir.name)
        delay = config.dynamic_batching.max_queue_delay_microseconds if config.HasField("dynamic_batching") else 0
        served.append(Served(onnx, contract, config.max_batch_size or repo_format.MAX_BATCH_SIZE, delay))
    return served


def find_models(targets) -> list[Served]:
    """The models named by run folders, Triton repositories or .onnx files.

    Raises:
        UsageError: a target is missing, not exported, or two models share a name.
    """
    if not targets:
        raise UsageError("name at least one run folder or Triton repository to serve, e.g. `zoo serve exports/digits-softmax`")
    served: list[Served] = []
    for target in targets:
        p = Path(target)
        if p.is_file() and p.suffix == ".onnx":
            served.append(Served(p, Contract.from_onnx(p)))
        elif p.is_dir() and (p / repo_format.MODEL_FILE).is_file():
            served.append(Served(p / repo_format.MODEL_FILE, Contract.from_onnx(p / repo_format.MODEL_FILE)))
        elif p.is_dir() and any(p.glob(f"*/{repo_format.CONFIG}")):
            served += _from_repository(p)
        elif p.is_dir() and (p / SPEC_FILE).is_file():
            raise UsageError(f"{target}: this run has no {repo_format.MODEL_FILE}; run `zoo export {target}` first")
        elif p.is_dir():
            raise UsageError(f"{target}: neither a run folder with {repo_format.MODEL_FILE} nor a Triton model "
                             f"repository (*/{repo_format.CONFIG}); give one made by `zoo export --triton`")
        else:
            raise UsageError(f"{target}: no such run folder, Triton repository or .onnx file")
    names = [s.name for s in served]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"two models are named {', '.join(duplicates)}; serve them from separate commands")
    return served


def _check_port(host: str, port: int, flag: str) -> None:
    if not 0 < port < 65536:
        raise UsageError(f"{flag} {port}: not a port number (1-65535)")
    with contextlib.closing(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError as e:
            why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
            raise UsageError(f"{host}:{port} {why}; choose another {flag}") from None


def _stub_environment() -> None:
    """The stub must load this interpreter's libpython, not the system's."""
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and (not paths or paths[0] != libdir):
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def urls(served: list[Served], host: str, port: int, grpc_port: int, metrics_port: int) -> list[str]:
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::1", "::") else host
    lines = [f"  REST     http://{shown}:{port}/v2/models/<name>/infer  (health: /v2/health/ready, metadata: /v2/models/<name>)",
             f"  gRPC     {shown}:{grpc_port}  (inference.GRPCInferenceService)",
             f"  metrics  http://{shown}:{metrics_port}/metrics"]
    return lines + [f"  model    {s.name}: {INPUT_NAME} [{BATCH_DIM} <= {s.max_batch_size}, "
                    f"{', '.join(map(str, s.contract.input_shape))}] {s.contract.oip_dtype(INPUT_NAME)} -> "
                    f"{', '.join(s.contract.outputs)}  ({s.onnx})" for s in served]


# nginx's JavaScript module (Debian: libnginx-mod-http-js), for the one correction the edge
# makes to Triton's answers (zoo/serve_edge.js); without it the edge only limits bodies.
NJS_MODULES = ("/usr/lib/nginx/modules/ngx_http_js_module.so", "/usr/lib64/nginx/modules/ngx_http_js_module.so",
               "/usr/local/nginx/modules/ngx_http_js_module.so", "/etc/nginx/modules/ngx_http_js_module.so")
INFER_PATH = r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$"  # the protocol's inference URL


def njs_module() -> str | None:
    return next((m for m in NJS_MODULES if os.path.isfile(m)), None)


def _edge_config(folder: Path, host: str, port: int, triton_port: int, njs: str | None) -> str:
    """nginx in front of Triton's REST port: the request-size limit Triton 2.51 lacks and,
    with njs, a 400 rather than Triton's 500 for requests it cannot parse."""
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    error = '{"error": "request body over %d bytes; send fewer examples per request, or use gRPC"}' % MAX_BODY
    proxy = """proxy_pass http://triton;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 300s;"""
    infer = "" if njs is None else f"""
        location ~ {INFER_PATH} {{
            js_content edge.infer;
        }}
        location /_zoo_triton/ {{
            internal;
            rewrite ^/_zoo_triton(/.*)$ $1 break;
            {proxy}
            proxy_buffering on;  # a subrequest's answer is read whole by serve_edge.js
        }}"""
    return f"""daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
{f"load_module {njs};" if njs else ""}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    client_max_body_size {MAX_BODY};
    client_body_buffer_size {MAX_BODY};
    {f"js_import edge from {folder}/serve_edge.js; subrequest_output_buffer_size {MAX_BODY};" if njs else ""}
    upstream triton {{ server 127.0.0.1:{triton_port}; keepalive 64; }}
    server {{
        listen {listen} reuseport;
        location / {{
            {proxy}
            proxy_buffering off;
        }}{infer}
        error_page 413 = @too_large;
        location @too_large {{
            default_type application/json;
            return 413 '{error}';
        }}
    }}
}}
"""


def _nginx() -> str | None:
    """nginx's path; Debian puts it in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def _start_edge(folder: Path, host: str, port: int, triton_port: int, njs: str | None):
    """Start nginx on the public REST port; None where there is no nginx."""
    import subprocess

    nginx = _nginx()
    if nginx is None:
        return None
    folder.mkdir()
    if njs is not None:
        (folder / "serve_edge.js").write_bytes(resources.files("zoo.deploy.assets").joinpath("serve_edge.js").read_bytes())
    (folder / "nginx.conf").write_text(_edge_config(folder, host, port, triton_port, njs))
    proc = subprocess.Popen([nginx, "-p", str(folder), "-e", str(folder / "nginx-error.log"), "-c",
                             str(folder / "nginx.conf")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,  # Ctrl-C reaches it through us
                            preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ZooError(f"nginx could not start on {host}:{port}: "
                           f"{_last_line(folder / 'nginx-error.log') or f'exit {proc.returncode}'}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return proc
        time.sleep(0.05)
    _stop_edge(proc)
    raise ZooError(f"nginx did not listen on {host}:{port} within 10 s")


def _die_with_parent() -> None:
    """In the child: Linux sends it SIGTERM when zoo serve dies, even by SIGKILL."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_edge(proc) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
        try:
            proc.wait(EXIT_TIMEOUT_S + 5)
        except Exception:
            proc.kill()
            proc.wait()
    with contextlib.suppress(OSError):  # workers orphaned by a master that died (its own process group)
        os.killpg(proc.pid, signal.SIGKILL)


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else ""
    return ""


def serve(targets, *, host=HOST, port=repo_format.HTTP_PORT, grpc_port=repo_format.GRPC_PORT,
          metrics_port=repo_format.METRICS_PORT, instances=INSTANCES, verbose=False, log=print) -> None:
    """Serve the models until Ctrl-C or SIGTERM; then stop Triton and return.

    Raises:
        UsageError: no servable model, a port in use, or the serve extra not installed.
    """
    served = find_models(targets)
    ports = {"--port": port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
    if len(set(ports.values())) != len(ports):
        raise UsageError(f"--port, --grpc-port and --metrics-port must differ; received {port}, {grpc_port}, {metrics_port}")
    for flag, p in ports.items():
        _check_port(host, p, flag)
    _stub_environment()
    try:
        from pytriton.triton import Triton, TritonConfig
    except ImportError as e:
        raise UsageError(f"zoo serve needs nvidia-pytriton ({e}); {INSTALL_HINT}") from None

    logs = tempfile.TemporaryDirectory(prefix="zoo-serve-")
    log_file = None if verbose else Path(logs.name) / "triton.log"  # Triton's own log, shown on failure
    edged = _nginx() is not None
    njs = njs_module() if edged else None
    triton_http = (HOST, _free_port()) if edged else (host, port)  # behind nginx: loopback only
    repo = Path(logs.name) / "models"
    config = TritonConfig(model_repository=repo, http_address=triton_http[0], http_port=triton_http[1],
                          grpc_address=host, grpc_port=grpc_port,
                          metrics_address=host, metrics_port=metrics_port, allow_metrics=True, allow_gpu_metrics=False,
                          exit_timeout_secs=EXIT_TIMEOUT_S, log_verbose=1 if verbose else None, log_file=log_file)
    triton = Triton(config=config)
    edge = None

    asked_to_stop = []

    def on_signal(signum, frame):
        asked_to_stop.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for s in served:  # Triton's Python backend runs each, zoo/triton_backend.py
            repo_format.write_repository(s.onnx, repo, max_batch_size=s.max_batch_size, queue_delay_us=s.queue_delay_us,
                                         instances=instances, backend="python", contract=s.contract)
        try:
            triton.run()
        except Exception as e:  # Triton did not come up: say why, with the end of its log
            raise ZooError(f"Triton did not start: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}"
                           f"{_log_tail(log_file)}; rerun with --verbose for its full log") from None
        if edged:
            edge = _start_edge(Path(logs.name) / "nginx", host, port, triton_http[1], njs)
        log(f"Triton {_triton_version()} is serving {len(served)} model(s) over the Open Inference Protocol:")
        for line in urls(served, host, port, grpc_port, metrics_port):
            log(line)
        log("example request:")
        log("  " + repo_format.curl_command(served[0].contract, host="localhost" if host == HOST else host, port=port))
        if edge is None:
            log("warning: no nginx, so REST request bodies are not limited and Triton 2.51 dies on one of about "
                "4 MiB; install nginx (apt-get install nginx-light) and zoo serve puts it in front")
        else:
            log(f"  (REST through nginx: request bodies over {MAX_BODY // (1024 * 1024)} MiB get a 413"
                + (", requests Triton cannot parse a 400)" if njs else
                   "; without nginx's njs module, requests Triton cannot parse get its 500: "
                   "apt-get install libnginx-mod-http-js)"))
        log("Ctrl-C or SIGTERM stops the server.")
        while triton.is_alive() and (edge is None or edge.poll() is None):
            time.sleep(0.5)
        which = "Triton" if not triton.is_alive() else "nginx"
        raise ZooError(f"{which} stopped unexpectedly"
                       f"{_log_tail(log_file) if which == 'Triton' else ': ' + _last_line(Path(logs.name) / 'nginx' / 'nginx-error.log')}"
                       f"; rerun with --verbose for Triton's full log")
    except KeyboardInterrupt:
        pass
    finally:
        _stop_edge(edge)
        triton.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logs.cleanup()
    log("stopped")


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _log_tail(log_file) -> str:
    with contextlib.suppress(OSError, TypeError):
        errors = [line for line in Path(log_file).read_text(errors="replace").splitlines() if line.startswith("E")]
        if errors:
            return f" (Triton: {errors[-1][:300]})"
    return ""


def _triton_version() -> str:
    try:
        from importlib.metadata import version

        return f"(nvidia-pytriton {version('nvidia-pytriton')})"
    except Exception:
        return ""
