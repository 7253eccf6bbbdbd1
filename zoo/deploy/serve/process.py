"""Triton Inference Server in a process of its own, started and stopped through PyTriton.

PyTriton (`nvidia-pytriton` 0.7) bundles Triton 2.51 and starts it on the model repository
zoo serve writes; Triton's Python backend runs each model in stub processes (one per
instance). Triton loads every model of the repository before it reports ready (explicit
model control, load-model *), so `start` returns only once they are loaded.

Traps (see /work/shared/PITFALLS.md):
- The Python-backend stub can load another libpython than the running interpreter's;
  the interpreter's LIBDIR goes first on LD_LIBRARY_PATH.
- The stub bundled with nvidia-pytriton 0.7 was built with a pybind11 that predates
  NumPy 2 (it reads dtype sizes through the NumPy 1 ABI, so every tensor it converts has
  0 bytes). Under NumPy 2 the backend (zoo/deploy/assets/triton_model.py) moves tensors
  by DLPack, which needs no NumPy ABI.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sysconfig
from pathlib import Path

from zoo.core.errors import ServerError, UsageError
from zoo.deploy.defaults import HOST
from zoo.deploy.serve.models import INSTALL_HINT

EXIT_TIMEOUT_S = 5  # how long Triton waits for in-flight requests when stopping


def _stub_environment() -> None:
    """The stub must load this interpreter's libpython, not the system's."""
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and (not paths or paths[0] != libdir):
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def load_pytriton():
    """PyTriton's (Triton, TritonConfig), with the stub's environment set first.

    Raises:
        UsageError: nvidia-pytriton is not installed.
    """
    _stub_environment()
    try:
        from pytriton.triton import Triton, TritonConfig
    except ImportError as e:
        raise UsageError(f"zoo serve needs nvidia-pytriton ({e}); {INSTALL_HINT}") from None
    return Triton, TritonConfig


def create(pytriton, repo: Path, *, http: tuple[str, int], grpc: tuple[str, int], host: str, metrics_port: int,
           verbose: bool, log_file: Path | None):
    """A Triton server, not started: REST on `http` and gRPC on `grpc` (address, port), metrics on `host`."""
    Triton, TritonConfig = pytriton
    config = TritonConfig(model_repository=repo, http_address=http[0], http_port=http[1],
                          grpc_address=grpc[0], grpc_port=grpc[1],
                          metrics_address=host, metrics_port=metrics_port, allow_metrics=True, allow_gpu_metrics=False,
                          exit_timeout_secs=EXIT_TIMEOUT_S, log_verbose=1 if verbose else None, log_file=log_file)
    return Triton(config=config)


def start(triton, log_file: Path | None) -> None:
    """Start Triton and wait until every model is loaded.

    Raises:
        ServerError: Triton did not come up; the message ends with the last error of its log.
    """
    try:
        triton.run()
    except Exception as e:
        raise ServerError(f"Triton did not start: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}"
                          f"{log_tail(log_file)}; rerun with --verbose for its full log") from None


def free_port(avoid=()) -> int:
    """A port on the loopback nobody listens on now, and not in `avoid` (for Triton's ports behind the edges)."""
    while True:
        with contextlib.closing(socket.socket()) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def log_tail(log_file) -> str:
    """` (Triton: <its last error line>)`, or nothing where its log has none (or is not a file)."""
    with contextlib.suppress(OSError, TypeError):
        errors = [line for line in Path(log_file).read_text(errors="replace").splitlines() if line.startswith("E")]
        if errors:
            return f" (Triton: {errors[-1][:300]})"
    return ""


def triton_version() -> str:
    """`(nvidia-pytriton X.Y.Z)` for the banner, or nothing."""
    try:
        from importlib.metadata import version

        return f"(nvidia-pytriton {version('nvidia-pytriton')})"
    except Exception:
        return ""


STUB = "triton_python_backend_stub"  # the Python backend's process, one per model instance


def _children() -> dict[int, list[int]]:
    """ppid -> pids, for every process /proc shows."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def stubs(root: int | None = None) -> dict[int, str]:
    """pid -> model folder of each Python-backend stub under `root` (default: this process). Linux only."""
    if not os.path.isdir("/proc"):
        return {}
    children, found, todo = _children(), {}, [root or os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), []):
            todo.append(pid)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if args and os.path.basename(args[0].decode(errors="replace")) == STUB:
                found[pid] = next((a.decode(errors="replace") for a in args[1:] if b"/" in a), "?")
    return found
