"""Run folders: where a model's artefacts live, under a lock.

A run is `<out>/<name>/` (default out: ./exports). A run is locked with flock(2) while a
command works on it; the kernel drops the lock when the process dies, so a crash never
leaves a run locked. Files in it are written by zoo.core.files (atomically) and recorded
by zoo.core.provenance.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from zoo.core import aside, contract, provenance
from zoo.core.contract import SPEC_FILE
from zoo.core.errors import RunLockedError, UsageError, ZooError, io_error
from zoo.core.files import active_run, refuse_link, remove, unlink, write_text

DEFAULT_OUT = "exports"
LATEST = ".latest"


def runs_root(out=None) -> Path:
    return Path(out or os.environ.get("ZOO_OUT") or DEFAULT_OUT)


def run_dir(name: str, out=None) -> Path:
    """`<out>/<name>`, refusing any name that would land outside `<out>`."""
    root = runs_root(out).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise UsageError(f"run name {name!r} would write outside {root}; use a plain name like 'mnist-mlp'")
    return path


def is_run(folder: Path) -> bool:
    """A folder zoo made a run of: it holds a regular spec.json."""
    spec = Path(folder) / SPEC_FILE
    return spec.is_file() and not spec.is_symlink()


LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Lock:
    """A held run lock: `fd` is the open lock file, which a child process can be handed (`adopted`)."""

    run: Path
    fd: int


@contextlib.contextmanager
def locked(run: Path, create=True):
    """Hold the run's lock for the duration, or raise RunLockedError at once. Yields a Lock.

    `create`: the command makes the run (build, train), so the folder may be new or
    empty; otherwise it must already be a run. A folder that is not a run never gets
    a lock file, and the run folder itself may not be a symbolic link.
    """
    run = Path(os.path.abspath(run))
    refuse_link(run)
    refuse_linked_artefacts(run)
    if not create and not run.is_dir():
        raise UsageError(f"{run}: no such run folder")
    if run.is_dir() and not is_run(run) and (not create or any(not e.name.startswith(".") for e in os.scandir(run))):
        raise UsageError(f"{run}: not a zoo run (no spec.json): give a folder made by `zoo build`, or choose "
                         f"another --out so zoo does not write into this folder")
    try:
        run.mkdir(parents=True, exist_ok=True)
        fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise io_error(run / LOCK_FILE if e.errno == errno.ELOOP else run, e) from None
    token = active_run.set(run)
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
        aside.recover(run, TRAINED)  # what a killed fresh start set aside goes back first
        with aside.settled(run, TRAINED):  # and a fresh start now keeps the earlier run until it succeeds
            yield Lock(run, fd)
    finally:
        active_run.reset(token)
        os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def adopted(run: Path, fd: int):
    """Work on `run` under a lock a parent process holds and handed over as the open file `fd`.

    The hand-off is checked, not trusted: `fd` must be the run's own lock file, and flock on
    it must succeed at once (it does only for the open file that holds the lock). Yields a Lock.
    """
    run = Path(os.path.abspath(run))
    try:
        held, there = os.fstat(fd), os.stat(run / LOCK_FILE, follow_symlinks=False)
        same = (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)
        if same:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        same = False
    except OSError as e:
        raise UsageError(f"{run}: lock file descriptor {fd} cannot be adopted ({e.strerror or e}); the parent "
                         f"process must hold the run's lock and pass it") from None
    if not same:
        raise RunLockedError(f"{run}: file descriptor {fd} is not the lock this run's parent process holds")
    token = active_run.set(run)
    try:
        yield Lock(run, fd)
    finally:
        active_run.reset(token)


_TMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp")  # atomic_path's mkstemp names: .NAME.XXXXXXXX.tmpSUFFIX


def _remove_stale_tmp(run: Path) -> None:
    """Remove the temporary files a killed zoo process left in a run.

    Called with the run's lock held, so no live zoo process is writing them. Only in a
    folder zoo has written a run to: `zoo verify x.onnx` may lock any folder.
    """
    if not ((run / contract.SPEC_FILE).exists() or (run / contract.HISTORY_FILE).exists()):
        return
    for folder in (run, run / contract.CHECKPOINTS, run / contract.TEST_DATA_SET):
        if folder.is_symlink():  # a linked folder is the user's: nothing in it is zoo's to remove
            continue
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if _TMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                    unlink(entry.path)


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
    raise UsageError(f"{target}: no such run folder; make it first with `zoo build SPEC` (or `zoo run SPEC`), "
                     f"or give the spec itself: `zoo train SPEC`")


# Everything a training makes or consumes, for a fresh start; runs of an older zoo have
# these files without records, so they are removed by name as well as through the manifest.
TRAINED = (contract.MODEL_KERAS, contract.HISTORY_FILE, contract.METRICS_FILE, contract.CURVES_PNG,
           contract.PREDICTIONS_PNG, contract.MODEL_ONNX, contract.CARD_FILE, contract.VERIFY_FILE,
           contract.CV_FILE, contract.TEST_DATA_SET, contract.CHECKPOINTS)


def refuse_linked_artefacts(run: Path) -> None:
    """UsageError if the run, or any artefact or folder of it, is a symbolic link.

    Checked when a run is locked, before a command writes or removes anything: a
    `checkpoints/` linked to the user's folder names their files by the names zoo records.
    """
    refuse_link(Path(run))
    for name in (SPEC_FILE, *TRAINED):
        refuse_link(Path(run) / name)


def start_over(run: Path) -> list[str]:
    """Clear the run for a fresh build or training, so nothing old can be taken for the new model's.

    Every artefact of an earlier training, and all made from it, is set aside in the run's
    .replaced/ (zoo.core.aside), and the records but spec.json's are dropped. They are
    deleted when the command's locked block ends well and put back when it fails, however it
    fails. A run with nothing of value yet (the untrained model.keras of `zoo build`, a
    history.json with no epoch, an empty checkpoints/) is simply cleared: so an interrupted
    first training keeps its own checkpoints for --resume.

    Returns the names set aside (or removed), in TRAINED's order, then any other artefact.
    Every name is checked before anything moves: an artefact or folder that is a symbolic
    link (a `checkpoints/` pointing at the user's folder) is a UsageError, and the run is
    left as it was.
    """
    refuse_linked_artefacts(run)
    run = Path(run)
    present = [name for name in TRAINED if os.path.lexists(run / name)]
    entries = provenance.manifest(run)
    others = [n for n in entries if n != SPEC_FILE and n.split("/")[0] not in TRAINED]  # web/..., triton/...
    if _nothing_to_keep(run, present, entries) and not others:
        for name in present:
            remove(run / name, run)
        provenance.forget(run)
        return present
    aside.set_aside(run, [*present, *others])
    return present + list({n.split("/")[0]: None for n in others})


def _nothing_to_keep(run: Path, present: list[str], entries: dict) -> bool:
    """Whether the run's training artefacts are only what a build or a training's first moment
    leaves: the untrained model.keras, an empty history.json, an empty checkpoints/."""
    def empty(name):
        if name == contract.MODEL_KERAS:
            return entries.get(name, {}).get("stage") == "build"
        if name == contract.CHECKPOINTS:
            return (run / name).is_dir() and not any(os.scandir(run / name))
        if name == contract.HISTORY_FILE:
            with contextlib.suppress(OSError, ValueError):
                return json.loads((run / name).read_text()) == []
        return False

    return all(empty(name) for name in present)
