"""Files written atomically, never through a symbolic link.

Every artefact is written to a temporary file in the same folder and renamed into place,
so a killed process leaves either the previous file or the new one, never half of one.
Inside the run being worked on (`active_run`, set by `zoo.core.runs.locked`) every folder
on the way must be a real folder: a link named `checkpoints` would send writes elsewhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import tempfile
from pathlib import Path

from zoo.core.errors import UsageError, io_error

_UMASK = os.umask(0)
os.umask(_UMASK)

# the run folder whose lock this context holds (zoo.core.runs.locked sets it)
active_run: contextvars.ContextVar[Path | None] = contextvars.ContextVar("zoo_active_run", default=None)


def refuse_link(p: Path) -> None:
    if p.is_symlink():
        raise UsageError(f"{p}: is a symbolic link; zoo never writes, truncates or deletes through links: "
                         f"remove the link (it may point outside the run)")


def _make_parents(path: Path) -> None:
    """Create path's parent folders, refusing any symbolic link inside the run being worked on.

    Inside the locked run every folder from the run down to `path` must be a real
    folder: a link named `checkpoints` or `test_data_set_0` would send writes elsewhere.
    """
    run = active_run.get()
    parent = Path(os.path.abspath(path)).parent
    if run is not None and (parent == run or run in parent.parents):
        refuse_link(run)
        for folder in [*reversed(parent.relative_to(run).parents), parent.relative_to(run)][1:]:
            p = run / folder
            refuse_link(p)
            if not p.exists():
                p.mkdir()
            elif not p.is_dir():
                raise UsageError(f"{p}: is a file where zoo needs a folder; move it away")
    else:
        refuse_link(parent)
        parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(path, before_replace=None):
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    On any failure the temporary file is removed and `path` keeps its old content.
    Refuses a `path` that is a symbolic link or lies below one inside the run.
    `before_replace(tmp)` runs once the content is complete and synced, before the rename.
    """
    path = Path(path)
    refuse_link(path)
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
        unlink(tmp)
        raise io_error(path, e) from None
    except BaseException:
        unlink(tmp)
        raise


def unlink(p):
    with contextlib.suppress(OSError):
        os.unlink(p)


def refuse_linked_folders(path: Path, run=None) -> None:
    """Refuse a `path` inside `run` (default: the locked run) reached through a linked folder.

    `run/checkpoints/epoch-0001.keras` names the user's file when `checkpoints` is a link to
    their folder; deleting or writing it would act outside the run.
    """
    run = run if run is not None else active_run.get()
    path = Path(os.path.abspath(path))
    if run is None:
        return
    run = Path(os.path.abspath(run))
    if run not in path.parents:
        return
    refuse_link(run)
    for folder in reversed(path.relative_to(run).parents[:-1]):
        refuse_link(run / folder)


def remove(path, run=None) -> None:
    """Delete an artefact: a file, or a link itself (never what it points to), or a folder of files.

    Refuses (UsageError) a path that lies below a linked folder of `run` (default: the locked run).
    """
    path = Path(path)
    refuse_linked_folders(path, run)
    if path.is_symlink() or path.is_file():
        unlink(path)
    elif path.is_dir():
        for entry in os.scandir(path):
            if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                unlink(entry.path)
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


def digest(path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except PermissionError as e:
        raise io_error(path, e, "read") from None
    return h.hexdigest()
