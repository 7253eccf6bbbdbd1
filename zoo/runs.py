"""Run folders: where a model's artefacts live, written atomically, under a lock.

A run is `<out>/<name>/` (default out: ./exports). Every artefact is written to a
temporary file in the same folder and renamed into place, so a killed process leaves
either the previous file or the new one, never half of one. A run is locked with
flock(2) while a command works on it; the kernel drops the lock when the process
dies, so a crash never leaves a run locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path

from .errors import RunLockedError, UsageError, ZooError

DEFAULT_OUT = "exports"
LATEST = ".latest"
_UMASK = os.umask(0)
os.umask(_UMASK)  # in the runs folder: the name of the run built or trained last


def runs_root(out=None) -> Path:
    return Path(out or os.environ.get("ZOO_OUT") or DEFAULT_OUT)


def run_dir(name: str, out=None) -> Path:
    """`<out>/<name>`, refusing any name that would land outside `<out>`."""
    root = runs_root(out).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise UsageError(f"run name {name!r} would write outside {root}; use a plain name like 'mnist-mlp'")
    return path


def _io_error(path, e: OSError) -> ZooError:
    hint = {errno.ENOSPC: "the disk is full: free space or choose another --out",
            errno.EACCES: "permission denied: choose a writable --out",
            errno.EROFS: "read-only file system: choose a writable --out",
            errno.EDQUOT: "disk quota exceeded: free space or choose another --out"}
    return UsageError(f"{path}: cannot write ({hint.get(e.errno, e.strerror)}); nothing was changed")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    On any failure the temporary file is removed and `path` keeps its old content.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; artefacts are ordinary files
        os.close(fd)
    except OSError as e:
        raise _io_error(path, e) from None
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise _io_error(path, e) from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(p):
    with contextlib.suppress(OSError):
        os.unlink(p)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable or corrupt ({e})") from None


@contextlib.contextmanager
def locked(run: Path, create=True):
    """Hold the run's lock for the duration, or raise RunLockedError at once."""
    if os.environ.get("ZOO_LOCK_HELD") == str(os.getppid()):
        yield  # a child zoo process working for the parent that holds the lock
        return
    if not create and not run.is_dir():
        raise UsageError(f"{run}: no such run folder")
    try:
        run.mkdir(parents=True, exist_ok=True)
        fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _io_error(run, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RunLockedError(f"{run}: another zoo process (pid {owner}) is working on this run; "
                                 f"wait for it to finish, or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _remove_stale_tmp(run)
        yield
    finally:
        os.close(fd)  # closing drops the flock


_TMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp")  # atomic_path's mkstemp names: .NAME.XXXXXXXX.tmpSUFFIX


def _remove_stale_tmp(run: Path) -> None:
    """Remove the temporary files a killed zoo process left in a run.

    Called with the run's lock held, so no live zoo process is writing them. Only in a
    folder zoo has written a run to: `zoo verify x.onnx` may lock any folder.
    """
    if not ((run / "spec.json").exists() or (run / "history.json").exists()):
        return
    for folder in (run, run / "checkpoints", run / "test_data_set_0"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if _TMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                    _unlink(entry.path)


def set_latest(run: Path) -> None:
    with contextlib.suppress(ZooError):
        write_text(run.parent / LATEST, run.name + "\n")


def latest(out=None) -> Path:
    """The run built or trained most recently under `out`."""
    root = runs_root(out)
    try:
        name = (root / LATEST).read_text().strip()
    except OSError:
        raise UsageError(f"no run yet under {root}: run `zoo build SPEC` first, or name a spec or run") from None
    return run_dir(name, out)


def find_run(target, out=None) -> Path:
    """A run folder from a path to one, or the latest run when `target` is None."""
    if target is None:
        return latest(out)
    p = Path(target)
    if p.is_dir():
        return p
    raise UsageError(f"{target}: no such run folder")
