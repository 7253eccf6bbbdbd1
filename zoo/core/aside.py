"""A fresh start that costs nothing until it has succeeded.

A fresh build or training replaces a run (`runs.start_over`). The run's earlier artefacts
are not removed then: they are renamed into RUN/.replaced/, beside copies of spec.json and
provenance.json. The folder is inside the run, so on the same file system: every move is one
atomic rename of the file or link itself, never anything through a link. When the command's
work on the run ends (`runs.locked`'s block), they are dropped if it succeeded, and put back
if it failed in any way: an error, a NaN loss, Ctrl-C, SIGTERM, a broken pipe on stdout.

A process killed outright (SIGKILL, the OOM killer) leaves the folder behind; the next
command that locks the run puts the earlier artefacts back first, and says so in one line.
Markers in the folder make every step safe to cut short and to do again:

- COMPLETE: everything is set aside. Before it, nothing of the run has changed but the
  moves, so putting back is only moving back.
- RESTORING: the new training's files are gone; the earlier ones are being moved back.
- COMMITTED: the new training is done; the folder is only to be deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from zoo.core import console, provenance, signals
from zoo.core.contract import MANIFEST, REPLACED_DIR, SPEC_FILE
from zoo.core.errors import UsageError, ZooError, io_error
from zoo.core.files import refuse_link, refuse_linked_folders, remove

FILES = "files"  # the artefacts, at their run-relative paths
COMPLETE, RESTORING, COMMITTED = "complete", "restoring", "committed"
COPIED = (SPEC_FILE, MANIFEST)  # rewritten, not removed, by a fresh start: kept as copies
ABSENT = ".absent"  # COPIED name + ABSENT: the run had no such file


def folder(run: Path) -> Path:
    return Path(run) / REPLACED_DIR


def pending(run: Path) -> bool:
    """Whether the run has earlier artefacts set aside: a real folder .replaced/ (see found)."""
    path = folder(run)
    return path.is_dir() and not path.is_symlink()


def found(run: Path) -> bool:
    """pending(), refusing a .replaced that is a link or a file rather than taking it for zoo's folder."""
    path = folder(run)
    if not os.path.lexists(path):
        return False
    refuse_link(path)
    ours = {FILES, COMPLETE, RESTORING, COMMITTED, *COPIED, *(n + ABSENT for n in COPIED)}
    if not path.is_dir() or any(name not in ours for name in os.listdir(path)):
        raise UsageError(f"{path}: is not a folder zoo made (zoo keeps a fresh training's earlier artefacts "
                         f"there until it completes); move it away")
    return True


def _files(run: Path, names) -> list[str]:
    """The run-relative paths that setting `names` aside moves: files and links; of a folder, the files
    and links directly in it (as files.remove takes them). Refuses a path below a linked folder."""
    moves = []
    for name in names:
        path = Path(run) / name
        refuse_linked_folders(path, run)
        if path.is_dir() and not path.is_symlink():
            moves += [f"{name}/{e.name}" for e in os.scandir(path) if e.is_file(follow_symlinks=False) or e.is_symlink()]
        elif os.path.lexists(path):
            moves.append(name)
    return sorted(set(moves))


def set_aside(run: Path, names) -> list[str]:
    """Rename every artefact of `names` into the run's .replaced/ and forget their records.

    Returns the run-relative paths moved ([] when there was nothing: then no folder is made).
    Every path is checked before anything moves (UsageError for one below a linked folder).
    """
    run = Path(run)
    moves = _files(run, names)
    if not moves:
        return []
    if found(run):
        raise UsageError(f"{folder(run)}: still holds the artefacts of an earlier training; run the command "
                         f"again to put them back first")
    aside = folder(run)
    try:
        (aside / FILES).mkdir(parents=True)
        for name in COPIED:
            refuse_link(run / name)
            if (run / name).is_file():
                shutil.copyfile(run / name, aside / name)
            else:
                (aside / (name + ABSENT)).touch()
        for rel in moves:
            (aside / FILES / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(run / rel, aside / FILES / rel)
            _remove_empty_parents(run, rel)
        (aside / COMPLETE).touch()
    except OSError as e:
        raise io_error(e.filename or aside, e) from None
    provenance.forget(run)
    return moves


def _remove_empty_parents(run: Path, rel: str) -> None:
    for parent in Path(rel).parents[:-1]:  # innermost first; never the run itself
        with contextlib.suppress(OSError):
            os.rmdir(run / parent)  # only when empty


def restore(run: Path, made=()) -> list[str]:
    """Put the set-aside artefacts back and delete the folder; returns their top-level names.

    First removes what the fresh start made since (remove_new; `made`: a training's files,
    recorded or not). A folder whose new training committed is only deleted (returns []).
    """
    run, aside = Path(run), folder(run)
    if (aside / COMMITTED).exists():
        shutil.rmtree(aside)
        return []
    complete = (aside / COMPLETE).exists()
    if complete and not (aside / RESTORING).exists():
        remove_new(run, made)
        (aside / RESTORING).touch()
    names = _move_back(run, aside)
    for name in COPIED if complete else ():  # before COMPLETE the copies may be cut short: the run's are whole
        if (aside / name).exists():
            os.replace(aside / name, run / name)
        elif (aside / (name + ABSENT)).exists():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(run / name)
    shutil.rmtree(aside)
    return names


def remove_new(run: Path, made=()) -> None:
    """Remove what a fresh start wrote since it set the run aside: every recorded artefact but
    spec.json (start_over left no other record), and every name of `made`."""
    try:
        recorded = [n for n in provenance.manifest(run) if n != SPEC_FILE]
    except ZooError:  # unreadable: the names of `made` cover what it can hold
        recorded = []
    for name in [*recorded, *made]:
        remove(run / name, run)
        _remove_empty_parents(run, name)


def _move_back(run: Path, aside: Path) -> list[str]:
    names = []
    for root, dirs, files in os.walk(aside / FILES):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = Path(root, name).relative_to(aside / FILES)
            names.append(rel.parts[0])
            for parent in reversed(rel.parents[:-1]):  # outermost first
                refuse_link(run / parent)
                (run / parent).mkdir(exist_ok=True)
            os.replace(aside / FILES / rel, run / rel)
    return sorted(set(names))


def commit(run: Path) -> None:
    """The fresh start succeeded: the set-aside artefacts go for good."""
    aside = folder(run)
    (aside / COMMITTED).touch()
    shutil.rmtree(aside)


def said(names) -> str:
    return ", ".join(f"{n}/" if "." not in n else n for n in names)


@contextlib.contextmanager
def settled(run: Path, made=()):
    """Around a command's work on a locked run: set-aside artefacts are dropped when it ends well,
    put back when it ends by any exception (Ctrl-C and SIGTERM included), which then says so."""
    try:
        yield
    except BaseException as e:
        if pending(run):
            _put_back(run, made, e)
        raise
    if pending(run):
        with signals.held():
            commit(run)


def _put_back(run: Path, made, e: BaseException) -> None:
    """Restore after the failure `e`, and add what happened to its message."""
    note = None
    try:
        with signals.held():  # not cut in half by a second Ctrl-C: it is handled once all is back
            note = f"{Path(run).name}'s earlier {said(restore(run, made)) or 'artefacts'} were put back as they were"
    except (ZooError, OSError) as failed:
        note = (f"its earlier artefacts could not be put back ({failed}); they are in {folder(run)}, and the next "
                f"command on the run puts them back")
    except KeyboardInterrupt as second:  # that second signal: it ends the process in e's place
        _annotate(second, note or f"the earlier artefacts are in {folder(run)}; the next command puts them back")
        raise
    _annotate(e, note)


def _annotate(e: BaseException, note: str) -> None:
    if isinstance(e, ZooError) and len(e.args) == 1 and isinstance(e.args[0], str):
        e.args = (f"{e.args[0]}; {note}",)
    with contextlib.suppress(AttributeError, TypeError):
        e.kept = note  # console's exit lines for Ctrl-C, SIGTERM and a closed stdout say it


def recover(run: Path, made=()) -> None:
    """Put back what a killed process left set aside (called with the run locked), saying so in one line."""
    if not found(run):
        return
    committed = (folder(run) / COMMITTED).exists()
    try:
        names = restore(run, made)
    except OSError as e:
        raise io_error(e.filename or folder(run), e) from None
    if not committed:
        console.note(f"{run}: a fresh training or build was killed before it finished; its earlier "
                     f"{said(names) or 'artefacts'} were put back from {REPLACED_DIR}/")
