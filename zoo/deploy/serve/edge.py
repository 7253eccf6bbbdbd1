"""The edge: nginx on zoo serve's REST port, in front of Triton on a private loopback port.

Triton 2.51's HTTP server dies on a request body of about 4 MiB, so where nginx is
installed it listens on the REST port, answers larger bodies with a 413 and proxies the
rest to Triton. Triton 2.51 also answers a request it cannot parse (malformed JSON, `data`
not matching its `shape`) with a 500; with nginx's njs module the edge turns those
answers, and only those, into a 400 with Triton's message (assets/serve_edge.js).

The configuration is the template assets/serve_nginx.conf.txt (string.Template: `$name` is
filled in, `$$` is nginx's own `$`), with assets/serve_nginx_njs.conf.txt's locations where
njs is installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import string
import time
from importlib import resources
from pathlib import Path

from zoo.core.errors import ServerError
from zoo.deploy import templates
from zoo.deploy.serve.process import EXIT_TIMEOUT_S

# Triton 2.51's HTTP server dies on a request body of about 4 MiB (3.5 MiB is answered); in front
# of it nginx answers bodies over MAX_BODY with a 413. A full batch of 64 float32 28x28 images
# in the protocol's JSON is about 1 MiB; larger payloads belong in several requests or on gRPC.
MAX_BODY = 3 * 1024 * 1024
# nginx's JavaScript module (Debian: libnginx-mod-http-js), for the one correction the edge
# makes to Triton's answers (serve_edge.js); without it the edge only limits bodies.
NJS_MODULES = ("/usr/lib/nginx/modules/ngx_http_js_module.so", "/usr/lib64/nginx/modules/ngx_http_js_module.so",
               "/usr/local/nginx/modules/ngx_http_js_module.so", "/etc/nginx/modules/ngx_http_js_module.so")
NJS_SCRIPT = "serve_edge.js"
CONFIG, ERROR_LOG = "nginx.conf", "nginx-error.log"
START_TIMEOUT_S = 10


def njs_module() -> str | None:
    """The njs module's path, or None where nginx has none."""
    return next((m for m in NJS_MODULES if os.path.isfile(m)), None)


def nginx() -> str | None:
    """nginx's path; Debian puts it in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def config(folder: Path, host: str, port: int, triton_port: int, njs: str | None) -> str:
    """nginx.conf: nginx in front of Triton's REST port, all its files in `folder`; `njs` the module or None."""
    locations = templates.template("serve_nginx_njs.conf.txt").substitute()
    return string.Template(templates.text("serve_nginx.conf.txt")).substitute(
        folder=folder, max_body=MAX_BODY, body_buffer=MAX_BODY + 1024 * 1024, triton_port=triton_port,
        listen=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        load_module=f"load_module {njs};" if njs else "",
        js_import=f"js_import edge from {folder}/{NJS_SCRIPT}; subrequest_output_buffer_size {MAX_BODY};" if njs else "",
        njs_locations="" if njs is None else "\n" + locations,
        error='{"error": "request body over %d bytes; send fewer examples per request, or use gRPC"}' % MAX_BODY)


def start(nginx_path: str, folder: Path, host: str, port: int, triton_port: int, njs: str | None):
    """Start nginx on the public REST port, proxying to Triton's; return its process once it listens.

    Raises:
        ServerError: nginx exited, or did not listen within START_TIMEOUT_S.
    """
    import subprocess

    folder.mkdir()
    if njs is not None:
        (folder / NJS_SCRIPT).write_bytes(resources.files("zoo.deploy.assets").joinpath(NJS_SCRIPT).read_bytes())
    (folder / CONFIG).write_text(config(folder, host, port, triton_port, njs))
    proc = subprocess.Popen([nginx_path, "-p", str(folder), "-e", str(folder / ERROR_LOG), "-c", str(folder / CONFIG)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,  # Ctrl-C reaches it through us
                            preexec_fn=_die_with_parent)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"nginx could not start on {host}:{port}: "
                              f"{last_error(folder) or f'exit {proc.returncode}'}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return proc
        time.sleep(0.05)
    stop(proc)
    raise ServerError(f"nginx did not listen on {host}:{port} within {START_TIMEOUT_S} s")


def _die_with_parent() -> None:
    """In the child: Linux sends it SIGTERM when zoo serve dies, even by SIGKILL."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop(proc) -> None:
    """Stop nginx gracefully (the requests in flight finish), and any worker it left behind."""
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


def last_error(folder: Path) -> str:
    """The last line of nginx's error log in `folder` (at most 300 characters), or nothing."""
    with contextlib.suppress(OSError):
        lines = (folder / ERROR_LOG).read_text(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else ""
    return ""
