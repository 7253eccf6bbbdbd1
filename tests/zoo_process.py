"""The real `zoo` command in a subprocess, as the hostile-review tests run it.

Shared by test_trust, test_outlive and test_aside: the environment a child gets, the call,
the one-error-line check, and what a run folder held. The `reference` and `run` fixtures
that use them are in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import SPECS

ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}


def child_env(extra=None) -> dict:
    """This process's environment without ZOO_DEBUG (a traceback would hide the one error line), plus `extra`."""
    base = {k: v for k, v in os.environ.items() if k != "ZOO_DEBUG"}
    return {**base, **ENV, **(extra or {})}


def zoo(*args, cwd, env=None, timeout=240, **kw) -> subprocess.CompletedProcess:
    """`python -m zoo ARGS` in `cwd` with child_env(env), stdin closed; output captured as text unless `kw`
    says otherwise."""
    kw.setdefault("capture_output", True)
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], text=True, cwd=cwd, env=child_env(env),
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def one_error(done, code, *words) -> str:
    """Exactly one 'Error: ' line on stderr, holding every word, no traceback, and the exit code."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def reference_run(folder: Path, epochs: int) -> Path:
    """digits-softmax trained for `epochs`, exported and verified under folder/exports."""
    done = zoo("run", SPECS / "digits-softmax.json", "--epochs", epochs, "--out", folder / "exports", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "exports" / "digits-softmax"


def copy_run(reference: Path, tmp_path: Path) -> Path:
    """A copy of a run to attack, under tmp_path/exports (links copied as links, no lock file)."""
    copy = tmp_path / "exports" / reference.name
    shutil.copytree(reference, copy, symlinks=True, ignore=shutil.ignore_patterns(".lock"))
    return copy


def snapshot(folder: Path) -> dict:
    """{relative path: bytes} of every regular file under `folder` but the lock file."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != ".lock"}
