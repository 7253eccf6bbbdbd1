"""The Python environment Triton's Python-backend stub runs zoo's model.py in.

Why zoo makes one: the stub bundled with nvidia-pytriton 0.7 embeds Python with an
isolated configuration (no PYTHONPATH) and was built with a pybind11 that predates NumPy 2.
Under NumPy 2 it reads every dtype's item size as 0: a numeric input comes out as a
0-byte array (model.py moves those by DLPack instead) and a BYTES (string) input is copied
with a stride of 0, so only its first byte survives and the request kills the stub. No
code in model.py can undo that copy: a table model (one string tensor per text column)
can only be served by a stub that imports NumPy 1.

So zoo serve writes a small virtual environment in its own temporary folder and names it
in every model's config.pbtxt as the Python backend's EXECUTION_ENV_PATH (a folder, which
Triton activates before it starts the stub). The environment's interpreter is the one
running zoo; its site-packages hold one .pth file that puts, in this order,

1. the NumPy 1 folder (STUB_PACKAGES, installed by .ci/setup-serve.sh with
   `pip install --no-deps --target <prefix>/zoo-triton-stub 'numpy==1.26.4'`), if present;
2. this interpreter's own site-packages (onnxruntime, and NumPy 2 where 1 is absent).

It also pins the stub to zoo's interpreter: without it, the stub takes whichever `python3`
comes first on PATH as its home.
"""

from __future__ import annotations

import os
import re
import site
import sys
import venv
from pathlib import Path

from zoo.core.errors import UsageError

PACKAGES_VARIABLE = "ZOO_TRITON_STUB_PACKAGES"  # where the stub's NumPy 1 lies, if not in the default place
INSTALL = "pip install --no-deps --target \"$(python -c 'import sys; print(sys.prefix)')/zoo-triton-stub\" 'numpy==1.26.4'"
_NUMPY_DIST = re.compile(r"^numpy-(\d+)\.[^-]*\.dist-info$")


def stub_packages() -> Path:
    """The folder the stub's NumPy 1 is looked for in ($ZOO_TRITON_STUB_PACKAGES, else <prefix>/zoo-triton-stub)."""
    return Path(os.environ.get(PACKAGES_VARIABLE) or Path(sys.prefix) / "zoo-triton-stub")


def numpy1(folder: Path) -> bool:
    """Whether `folder` holds a NumPy 1 (read from its dist-info; nothing is imported)."""
    try:
        majors = {m.group(1) for p in folder.iterdir() if (m := _NUMPY_DIST.match(p.name))}
    except OSError:
        return False
    return majors == {"1"} and (folder / "numpy" / "__init__.py").is_file()


def require_numpy1(names: list[str]) -> None:
    """Raise UsageError (exit 2) naming the table models when the stub has no NumPy 1 to take their strings."""
    if names and not numpy1(stub_packages()):
        raise UsageError(f"{', '.join(names)}: a table model takes string inputs, which Triton's Python-backend "
                         f"stub (built for NumPy 1) corrupts under NumPy 2; install NumPy 1 for the stub alone, "
                         f"beside zoo's NumPy 2: {INSTALL} (or point {PACKAGES_VARIABLE} at such a folder)")


def create(folder: Path) -> Path:
    """Write the stub's environment at `folder` (which must not exist) and return it.

    Raises:
        UsageError: the folder's path holds a space or a quote (Triton passes it unquoted to bash).
    """
    if re.search(r"[\s'\"\\$`]", str(folder)):
        raise UsageError(f"{folder}: the stub's environment cannot lie under a path with spaces or quotes "
                         f"(Triton passes it to bash unquoted); set TMPDIR to a plain folder")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(folder)
    paths = [stub_packages()] if numpy1(stub_packages()) else []
    paths += [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (folder / "lib" / version / "site-packages" / "zoo-serve.pth").write_text("".join(f"{p}\n" for p in paths))
    return folder
