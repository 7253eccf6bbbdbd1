"""`zoo serve`: exported models served over the Open Inference Protocol by a real Triton server.

PyTriton (`nvidia-pytriton`) starts the Triton Inference Server it bundles and binds each
model to a Python callable: here an onnxruntime session. Triton owns everything on the
wire: REST and gRPC (KServe v2 / Open Inference Protocol), dynamic batching, the
health, ready and metadata endpoints, Prometheus metrics, and the checking of every
request against the model's configuration (input name, datatype, shape, batch size),
which it answers with a 400 before our code runs. zoo maps the contract (zoo.contract)
onto that configuration and owns nothing else.

The edge: Triton 2.51's HTTP server dies on a body of about 4 MiB, so where nginx is
installed it listens on the REST port, limits bodies (413) and proxies to Triton on a
private loopback port. Triton answers malformed JSON with a 500 (a clear message, but
not a 4xx); the README and the tests say so.

Four traps, all handled here (see /work/shared/PITFALLS.md):
- PyTriton's Python-backend stub can load another libpython than the running
  interpreter's; the interpreter's LIBDIR goes first on LD_LIBRARY_PATH.
- The stub bundled with nvidia-pytriton 0.7 was built with a pybind11 that predates
  NumPy 2 (it reads dtype sizes through the NumPy 1 ABI, so every tensor it converts has
  0 bytes). Under NumPy 2 the two conversions of PyTriton's proxy that go through it
  are switched to DLPack, which the stub also supports and which needs no NumPy ABI.
- The proxy gives the stub 1 s to fetch its configuration at start-up, too little on a
  busy machine; it gets 60.
- Triton's /v2/health/ready answers 200 before PyTriton has loaded the models; wait on
  /v2/models/<name>/ready (zoo serve prints its banner only once they are loaded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import signal
import socket
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import triton as repo_format
from .contract import BATCH_DIM, INPUT_NAME, Contract
from .errors import UsageError, ZooError

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
        elif p.is_dir() and (p / "spec.json").is_file():
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


# PyTriton's proxy (model.py, run by Triton's Python-backend stub) converts tensors with
# pybind11's NumPy-1-only code; under NumPy 2 we hand it the same data by DLPack instead.
_PROXY_FIXES = (
    ("\nfrom . import communication, data\n",
     "\nfrom . import communication, data\n"
     "import sys as _zoo_sys\n"
     "import numpy as _zoo_np\n"
     "_zoo_hook = _zoo_sys.unraisablehook\n"
     "def _zoo_unraisable(u):  # the stub marks a consumed capsule 'used_dlpack'; numpy's deleter expects\n"
     "    if not (isinstance(u.exc_value, ValueError) and 'PyCapsule' in str(u.exc_value)):  # 'used_dltensor'\n"
     "        _zoo_hook(u)\n"
     "_zoo_sys.unraisablehook = _zoo_unraisable\n"),
    ("request[input_name] = input_tensor.as_numpy()",
     "request[input_name] = _zoo_np.from_dlpack(input_tensor)"),
    ("pb_utils.Tensor(name, value)",
     "pb_utils.Tensor.from_dlpack(name, _zoo_np.ascontiguousarray(value).__dlpack__())"),
)


# The proxy gives the stub 1 s to fetch its configuration from our process at start-up; on
# a busy 2-core machine that is not always enough ("Model initialize error ... handshake").
_HANDSHAKE_FIX = ("get_config_from_handshake_server(handshake_socket)",
                  "get_config_from_handshake_server(handshake_socket, timeout_s=60.0)")


def _proxy_fixes() -> None:
    """Patch the proxy files PyTriton sends to Triton's model store (never the installed package)."""
    import numpy as np
    from pytriton.models import model as pytriton_model

    if getattr(pytriton_model.Model, "_zoo_fixed", False):
        return
    fixes = (_HANDSHAKE_FIX, *(_PROXY_FIXES if int(np.__version__.split(".")[0]) >= 2 else ()))
    original = pytriton_model.Model.get_proxy_model_files

    def get_proxy_model_files(self):
        files = original(self)
        key = f"file:{self.model_version}/model.py"
        source = files[key].decode("utf-8")
        for old, new in fixes:
            if old not in source:
                raise UsageError(f"this nvidia-pytriton's proxy differs from 0.7's ({old!r} not found); "
                                 f"install nvidia-pytriton==0.7.0")
            source = source.replace(old, new)
        files[key] = source.encode("utf-8")
        return files

    pytriton_model.Model.get_proxy_model_files = get_proxy_model_files
    pytriton_model.Model._zoo_fixed = True


def _infer_function(served: Served):
    """The callable PyTriton binds: a batch of requests in, onnxruntime's outputs out."""
    import onnxruntime as ort
    from pytriton.decorators import batch

    session = ort.InferenceSession(str(served.onnx), providers=["CPUExecutionProvider"])
    outputs = list(served.contract.outputs)

    @batch
    def infer(**inputs):
        return dict(zip(outputs, session.run(outputs, {INPUT_NAME: inputs[INPUT_NAME]})))

    return infer


def urls(served: list[Served], host: str, port: int, grpc_port: int, metrics_port: int) -> list[str]:
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::1", "::") else host
    lines = [f"  REST     http://{shown}:{port}/v2/models/<name>/infer  (health: /v2/health/ready, metadata: /v2/models/<name>)",
             f"  gRPC     {shown}:{grpc_port}  (inference.GRPCInferenceService)",
             f"  metrics  http://{shown}:{metrics_port}/metrics"]
    return lines + [f"  model    {s.name}: {INPUT_NAME} [{BATCH_DIM} <= {s.max_batch_size}, "
                    f"{', '.join(map(str, s.contract.input_shape))}] {s.contract.oip_dtype(INPUT_NAME)} -> "
                    f"{', '.join(s.contract.outputs)}  ({s.onnx})" for s in served]


def _edge_config(folder: Path, host: str, port: int, triton_port: int) -> str:
    """nginx in front of Triton's REST port: the request-size limit Triton 2.51 lacks."""
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    error = '{"error": "request body over %d bytes; send fewer examples per request, or use gRPC"}' % MAX_BODY
    return f"""daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
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
    upstream triton {{ server 127.0.0.1:{triton_port}; keepalive 64; }}
    server {{
        listen {listen} reuseport;
        location / {{
            proxy_pass http://triton;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
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
    import shutil

    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def _start_edge(folder: Path, host: str, port: int, triton_port: int):
    """Start nginx on the public REST port; None where there is no nginx."""
    import subprocess

    nginx = _nginx()
    if nginx is None:
        return None
    folder.mkdir()
    (folder / "nginx.conf").write_text(_edge_config(folder, host, port, triton_port))
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
        import numpy as np
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as e:
        raise UsageError(f"zoo serve needs nvidia-pytriton ({e}); {INSTALL_HINT}") from None
    _proxy_fixes()

    logs = tempfile.TemporaryDirectory(prefix="zoo-serve-")
    log_file = None if verbose else Path(logs.name) / "triton.log"  # Triton's own log, shown on failure
    edged = _nginx() is not None
    triton_http = (HOST, _free_port()) if edged else (host, port)  # behind nginx: loopback only
    config = TritonConfig(http_address=triton_http[0], http_port=triton_http[1], grpc_address=host, grpc_port=grpc_port,
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
        for s in served:
            c = s.contract
            triton.bind(
                model_name=s.name,
                infer_func=[_infer_function(s) for _ in range(instances)],  # batches in flight at once
                inputs=[Tensor(name=INPUT_NAME, dtype=np.dtype(c.input_dtype).type, shape=c.input_shape)],
                outputs=[Tensor(name=o, dtype=np.float32, shape=c.output_dims(o)) for o in c.outputs],
                config=ModelConfig(batching=True, max_batch_size=s.max_batch_size,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=s.queue_delay_us)),
                strict=True,
            )
        try:
            triton.run()
        except Exception as e:  # Triton did not come up: say why, with the end of its log
            raise ZooError(f"Triton did not start: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}"
                           f"{_log_tail(log_file)}; rerun with --verbose for its full log") from None
        if edged:
            edge = _start_edge(Path(logs.name) / "nginx", host, port, triton_http[1])
        log(f"Triton {_triton_version()} is serving {len(served)} model(s) over the Open Inference Protocol:")
        for line in urls(served, host, port, grpc_port, metrics_port):
            log(line)
        log("example request:")
        log("  " + repo_format.curl_command(served[0].contract, host="localhost" if host == HOST else host, port=port))
        if edge is None:
            log(f"warning: no nginx, so REST request bodies are not limited and Triton 2.51 dies on one of about "
                f"4 MiB; install nginx (apt-get install nginx-light) and zoo serve puts it in front")
        else:
            log(f"  (REST through nginx: request bodies over {MAX_BODY // (1024 * 1024)} MiB get a 413)")
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
