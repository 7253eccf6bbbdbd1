"""Run folders: where a model's artefacts live, written atomically, under a lock.

A run is `<out>/<name>/` (default out: ./exports). Every artefact is written to a
temporary file in the same folder and renamed into place, so a killed process leaves
either the previous file or the new one, never half of one. A run is locked with
flock(2) while a command works on it; the kernel drops the lock when the process
dies, so a crash never leaves a run locked.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import errno
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path

from .errors import EnvironmentProblem, ProvenanceError, RunLockedError, UsageError, ZooError

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


_ENVIRONMENT = {errno.ENOSPC: "the disk is full: free space or choose another --out",
                errno.EDQUOT: "disk quota exceeded: free space or choose another --out",
                errno.EFBIG: "larger than this system lets a file grow (ulimit -f): raise the limit",
                errno.EACCES: "permission denied: fix its permissions or choose another location",
                errno.EPERM: "choose another location",
                errno.EROFS: "read-only file system: choose a writable --out"}


ENVIRONMENT_ERRNOS = frozenset(_ENVIRONMENT)


def io_error(path, e: OSError, doing="write") -> ZooError:
    """One line for a failed file operation: the environment's fault (exit 9) or the arguments' (exit 2)."""
    if e.errno in _ENVIRONMENT:
        return EnvironmentProblem(f"{path}: cannot {doing} ({e.strerror or os.strerror(e.errno)}: "
                                  f"{_ENVIRONMENT[e.errno]}); nothing was changed")
    if e.errno == errno.ELOOP:
        return UsageError(f"{path}: is a symbolic link; zoo never writes through links: remove it")
    return UsageError(f"{path}: cannot {doing} ({e.strerror or e}); nothing was changed")


_active_run: contextvars.ContextVar[Path | None] = contextvars.ContextVar("zoo_active_run", default=None)


def _refuse_link(p: Path) -> None:
    if p.is_symlink():
        raise UsageError(f"{p}: is a symbolic link; zoo never writes, truncates or deletes through links: "
                         f"remove the link (it may point outside the run)")


def _make_parents(path: Path) -> None:
    """Create path's parent folders, refusing any symbolic link inside the run being worked on.

    Inside the locked run every folder from the run down to `path` must be a real
    folder: a link named `checkpoints` or `test_data_set_0` would send writes elsewhere.
    """
    run = _active_run.get()
    parent = Path(os.path.abspath(path)).parent
    if run is not None and (parent == run or run in parent.parents):
        _refuse_link(run)
        for folder in [*reversed(parent.relative_to(run).parents), parent.relative_to(run)][1:]:
            p = run / folder
            _refuse_link(p)
            if not p.exists():
                p.mkdir()
            elif not p.is_dir():
                raise UsageError(f"{p}: is a file where zoo needs a folder; move it away")
    else:
        _refuse_link(parent)
        parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(path, before_replace=None):
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    On any failure the temporary file is removed and `path` keeps its old content.
    Refuses a `path` that is a symbolic link or lies below one inside the run.
    `before_replace(tmp)` runs once the content is complete and synced, before the rename.
    """
    path = Path(path)
    _refuse_link(path)
    try:
        _make_parents(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; artefacts are ordinary files
        os.close(fd)
    except OSError as e:
        raise io_error(path, e) from None
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise io_error(path, e) from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(p):
    with contextlib.suppress(OSError):
        os.unlink(p)


def remove(path) -> None:
    """Delete an artefact: a file, or a link itself (never what it points to), or a folder of files."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        _unlink(path)
    elif path.is_dir():
        for entry in os.scandir(path):
            if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                _unlink(entry.path)
        with contextlib.suppress(OSError):
            os.rmdir(path)


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
    except PermissionError as e:
        raise io_error(path, e, "read") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable or corrupt ({e})") from None


def is_run(folder: Path) -> bool:
    """A folder zoo made a run of: it holds a regular spec.json."""
    spec = Path(folder) / "spec.json"
    return spec.is_file() and not spec.is_symlink()


@contextlib.contextmanager
def locked(run: Path, create=True):
    """Hold the run's lock for the duration, or raise RunLockedError at once.

    `create`: the command makes the run (build, train), so the folder may be new or
    empty; otherwise it must already be a run. A folder that is not a run never gets
    a lock file, and the run folder itself may not be a symbolic link.
    """
    run = Path(os.path.abspath(run))
    if os.environ.get("ZOO_LOCK_HELD") == str(os.getppid()):
        token = _active_run.set(run)  # a child zoo process working for the parent that holds the lock
        try:
            yield
        finally:
            _active_run.reset(token)
        return
    _refuse_link(run)
    if not create and not run.is_dir():
        raise UsageError(f"{run}: no such run folder")
    if run.is_dir() and not is_run(run) and (not create or any(not e.name.startswith(".") for e in os.scandir(run))):
        raise UsageError(f"{run}: not a zoo run (no spec.json): give a folder made by `zoo build`, or choose "
                         f"another --out so zoo does not write into this folder")
    try:
        run.mkdir(parents=True, exist_ok=True)
        fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise io_error(run / ".lock" if e.errno == errno.ELOOP else run, e) from None
    token = _active_run.set(run)
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
        _active_run.reset(token)
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


# ----- provenance ---------------------------------------------------------------------------
#
# provenance.json records, for every artefact of a run, its sha256, the stage that wrote
# it and the digests of what it was made from. Recording a new version of an artefact
# removes everything made from the old one, transitively (a retrained model.keras takes
# metrics.json, model.onnx, card.md, verify.json and test_data_set_0/ with it), and a
# consumer checks what it reads against the record, so a file edited by hand, or left
# from an older model, is named instead of trusted.

MANIFEST = "provenance.json"
STAGE_COMMAND = {"build": "zoo build SPEC", "train": "zoo train RUN", "export": "zoo export RUN",
                 "verify": "zoo verify RUN"}


def digest(path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except PermissionError as e:
        raise io_error(path, e, "read") from None
    return h.hexdigest()


def manifest(run: Path) -> dict:
    path = Path(run) / MANIFEST
    if not path.exists():
        return {}
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "sha256" in v for v in data.values()):
        raise ProvenanceError(f"{path}: is not a provenance record zoo wrote (edited by hand?); "
                              f"rebuild the run with `zoo build SPEC` and `zoo train`")
    return data


def _save_manifest(run: Path, entries: dict) -> None:
    write_json(Path(run) / MANIFEST, dict(sorted(entries.items())))


def _cascade(run: Path, entries: dict) -> list[str]:
    """Remove every entry (and its file) made from an artefact that is gone or has another digest."""
    def stale(e):
        return any(not i.startswith("@") and (i not in entries or entries[i]["sha256"] != d)
                   for i, d in e.get("inputs", {}).items())

    removed = []
    while gone := [name for name, e in entries.items() if stale(e)]:
        for name in gone:
            remove(Path(run) / name)
            del entries[name]
        removed += gone
    return removed


@contextlib.contextmanager
def artefact(run: Path, name: str, stage: str, inputs=(), extra=None):
    """Write run/name atomically and record it as written by `stage` from `inputs` (names
    of the run's artefacts, each checked against its own record first) and `extra`
    (digests of things outside the run, keyed with a leading "@": {"@data": ...}).

    Yields the temporary path to write. Anything made from an earlier version of `name`
    is removed. The new record is staged as `pending` before the rename and committed
    after it, so a process killed at any moment leaves a file that matches its record.
    """
    run = Path(run)
    entries = manifest(run)
    ins = {i: check(run, i, entries=entries)["sha256"] for i in inputs}
    ins.update(extra or {})
    new = {"stage": stage, "inputs": ins}

    def stage_pending(tmp):
        new["sha256"] = digest(tmp)
        old = entries.get(name)
        entries[name] = {**old, "pending": new} if old else {**new, "pending": new}
        _save_manifest(run, entries)

    with atomic_path(run / name, before_replace=stage_pending) as tmp:
        yield tmp
    entries[name] = new
    _cascade(run, entries)
    _save_manifest(run, entries)


def save_text(run: Path, name: str, text: str, stage: str, inputs=(), extra=None) -> str:
    """artefact() for a text file; returns its digest."""
    with artefact(run, name, stage, inputs, extra) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return manifest(run)[name]["sha256"]


def save_json(run: Path, name: str, obj, stage: str, inputs=(), extra=None) -> str:
    return save_text(run, name, json.dumps(obj, indent=2) + "\n", stage, inputs, extra)


def record_folder(run: Path, folder: str, stage: str, inputs=()) -> None:
    """Record every file under run/folder, a folder renamed into place whole (web/, say)
    as made by `stage` from `inputs`; earlier records under it are replaced."""
    run = Path(run)
    entries = manifest(run)
    ins = {i: check(run, i, entries=entries)["sha256"] for i in inputs}
    for name in [n for n in entries if n.startswith(folder + "/")]:
        del entries[name]
    for path in sorted((run / folder).rglob("*")):
        if path.is_file() and not path.is_symlink():
            entries[path.relative_to(run).as_posix()] = {"sha256": digest(path), "stage": stage, "inputs": ins}
    _save_manifest(run, entries)


def invalidate(run: Path, *names: str, prefix=None) -> list[str]:
    """Remove artefacts (and, transitively, all made from them); `prefix` also takes every entry under it."""
    run = Path(run)
    entries = manifest(run)
    gone = [n for n in entries if n in names or (prefix and n.startswith(prefix))]
    for name in [*names, *gone]:
        remove(run / name)
        entries.pop(name, None)
    removed = _cascade(run, entries)
    if entries or (run / MANIFEST).exists():
        _save_manifest(run, entries)
    return [*gone, *removed]


def check(run: Path, name: str, stage=None, entries=None) -> dict:
    """The record of run/name, after checking the file is the one recorded. Raises ProvenanceError."""
    run = Path(run)
    entries = manifest(run) if entries is None else entries
    path = run / name
    entry = entries.get(name)
    if entry is None:
        if path.exists():
            raise ProvenanceError(f"{path}: has no provenance record: zoo did not write it (copied in by hand, or "
                                  f"made by an older zoo); rebuild the run with `zoo build SPEC` and `zoo train`")
        raise UsageError(f"{path}: no such file in the run")
    if not path.is_file() or path.is_symlink():
        raise ProvenanceError(f"{path}: recorded by `zoo {entry['stage']}` but missing or not a regular file; "
                              f"rerun `{STAGE_COMMAND.get(entry['stage'], 'zoo ' + entry['stage'])}`")
    sha = digest(path)
    if sha != entry["sha256"] and sha == entry.get("pending", {}).get("sha256"):
        entry = entries[name] = entry["pending"]  # written whole, then killed before the record was committed
    if sha != entry["sha256"]:
        raise ProvenanceError(f"{path}: changed since `zoo {entry['stage']}` wrote it (sha256 {sha[:12]}, recorded "
                              f"{entry['sha256'][:12]}): edited or replaced by hand; rerun "
                              f"`{STAGE_COMMAND.get(entry['stage'], 'zoo ' + entry['stage'])}` to make it again")
    if stage is not None and entry["stage"] != stage:
        raise ProvenanceError(f"{path}: was written by `zoo {entry['stage']}`, not by `zoo {stage}`")
    return entry


def check_chain(run: Path, name: str) -> dict:
    """check() name and, recursively, that everything it was made from is still what it was made from."""
    run = Path(run)
    entries = manifest(run)
    seen = set()

    def walk(n):
        entry = check(run, n, entries=entries)
        if n in seen:
            return entry
        seen.add(n)
        for i, d in entry.get("inputs", {}).items():
            if i.startswith("@"):
                continue
            parent = walk(i)
            if parent["sha256"] != d:
                raise ProvenanceError(f"{run / n}: was made from another {i} (sha256 {d[:12]}) than the one in the "
                                      f"run ({parent['sha256'][:12]}); rerun `{STAGE_COMMAND.get(entry['stage'], entry['stage'])}`")
        return entry

    return walk(name)


# Everything a training makes or consumes, for a fresh start; runs of an older zoo have
# these files without records, so they are removed by name as well as through the manifest.
TRAINED = ("model.keras", "history.json", "metrics.json", "curves.png", "predictions.png", "model.onnx", "card.md",
           "verify.json", "test_data_set_0", "checkpoints")


def start_over(run: Path) -> None:
    """Remove every artefact of an earlier training (and all made from it): a fresh
    build or training replaces the run, so nothing old can be taken for the new model's."""
    invalidate(run, *TRAINED[:-2], prefix="checkpoints/")
    for name in TRAINED:
        remove(Path(run) / name)
