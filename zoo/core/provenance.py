"""Provenance: which stage wrote each artefact of a run, and from what.

provenance.json records, for every artefact of a run, its sha256, the stage that wrote
it and the digests of what it was made from. Recording a new version of an artefact
removes everything made from the old one, transitively (a retrained model.keras takes
metrics.json, model.onnx, card.md, verify.json and test_data_set_0/ with it), and a
consumer checks what it reads against the record, so a file edited by hand, or left
from an older model, is named instead of trusted.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from zoo.core import contract
from zoo.core.errors import ProvenanceError, UsageError, ZooError
from zoo.core.files import atomic_path, digest, read_json, remove, write_json

MANIFEST = contract.MANIFEST
STAGE_COMMAND = {"build": "zoo build SPEC", "train": "zoo train RUN", "export": "zoo export RUN",
                 "verify": "zoo verify RUN"}


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
            _remove_artefact(Path(run), name)
            del entries[name]
        removed += gone
    return removed


def _remove_artefact(run: Path, name: str) -> None:
    """Remove run/name, and the folder inside the run that held it once that folder is empty
    (a variant's test_data_set_0.<variant>/, say): a removed artefact leaves nothing behind."""
    remove(run / name, run)
    folder = (run / name).parent
    if folder != run and not folder.is_symlink():
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


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
        _remove_artefact(run, name)
        entries.pop(name, None)
    removed = _cascade(run, entries)
    if entries or (run / MANIFEST).exists():
        _save_manifest(run, entries)
    return [*gone, *removed]


def forget(run: Path, keep=(contract.SPEC_FILE,)) -> None:
    """Drop every record but those of `keep`, leaving the files alone (a run whose artefacts were set aside)."""
    entries = manifest(run)
    if entries:
        _save_manifest(run, {n: e for n, e in entries.items() if n in keep})


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


def onnx_is_current(run) -> bool:
    """Whether the run's model.onnx is the export of its current model.keras: then adding a
    repository or a page needs no new export."""
    try:
        check_chain(Path(run), contract.MODEL_ONNX)
    except ZooError:
        return False
    return True


def made_from(run: Path, names=(contract.SPEC_FILE, contract.MODEL_KERAS, contract.METRICS_FILE)) -> dict[str, str]:
    """The recorded digests of the named artefacts (what model.onnx is made from, for its metadata)."""
    entries = manifest(run)
    return {name: entries[name]["sha256"] for name in names if name in entries}
