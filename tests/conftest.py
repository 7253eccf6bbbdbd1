"""Shared fixtures.

Real data (Fashion-MNIST, the MNIST 10k subset) is looked for in $ZOO_DATA_DIR, then
../shared/datasets beside the checkout, then ~/.keras/datasets. Where none has it, the
tests that need it skip and say how to enable them; `.ci/run` points ZOO_DATA_DIR at
../shared/datasets so CI runs every one.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
DATA_CANDIDATES = [Path(p) for p in (os.environ.get("ZOO_DATA_DIR"), ROOT.parent / "shared" / "datasets",
                                      Path.home() / ".keras" / "datasets") if p]
FASHION = "fashion-mnist/t10k-labels-idx1-ubyte.gz"
MNIST10K = "mnist-10k.npz"


def find_data(member: str) -> Path | None:
    """The first candidate data folder that holds `member`, or None."""
    return next((d for d in DATA_CANDIDATES if (d / member).is_file()), None)


# Where Fashion-MNIST is; a folder with nothing in it when it is nowhere (tests that need it skip).
DATASETS = (find_data(FASHION) or find_data(MNIST10K) or ROOT / "tests" / "no-datasets").resolve()
NO_DATA_REASON = ("needs {what}; none of {where} has it. Set ZOO_DATA_DIR to a folder in the keras.datasets "
                  "layout (../shared/datasets on the team's machines) to run it")


def need_data(member=FASHION, what="Fashion-MNIST"):
    """Skip the calling test unless `member` is found; return its data folder."""
    folder = find_data(member)
    if folder is None:
        pytest.skip(NO_DATA_REASON.format(what=what, where=", ".join(map(str, DATA_CANDIDATES))))
    return folder.resolve()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


# ----- slow end-to-end tests: run by `pytest --slow` (or ZOO_SLOW=1) and by CI ----------------

SLOW_REASON = "slow end-to-end test (trains and exports models): run with `pytest --slow` or ZOO_SLOW=1 (.ci/run does)"


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the tests marked slow (end-to-end: they train and export models)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow") or os.environ.get("ZOO_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason=SLOW_REASON)
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def catalog_specs():
    return sorted(p for p in SPECS.glob("*.json") if p.name != "schema.json")


@pytest.fixture
def datasets():
    """The data folder with Fashion-MNIST; skips the test where there is none."""
    return need_data()


@pytest.fixture
def mnist10k():
    """The data folder with the real MNIST 10k subset; skips the test where there is none."""
    return need_data(MNIST10K, "the MNIST 10k subset (mnist-10k.npz)")


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """Run the real `zoo` command in a subprocess, with runs under tmp_path/exports."""
    monkeypatch.chdir(tmp_path)

    def run(*args, env=None, timeout=600):
        full_env = {**os.environ, "ZOO_OUT": str(tmp_path / "exports"), "ZOO_DATA_DIR": str(DATASETS),
                    "ZOO_SPECS": str(SPECS), **(env or {})}
        return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=tmp_path, stdin=subprocess.DEVNULL)

    return run


def write_spec(folder: Path, spec: dict, name="spec.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(spec))
    return path


def spec_dict(name):
    return json.loads((SPECS / f"{name}.json").read_text())


# ----- a bounded suite ----------------------------------------------------------------------

MEMORY_LIMIT = 4 * 1024**3  # bytes: the whole suite, pytest and its largest child at once


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if the suite's memory grew past MEMORY_LIMIT.

    ru_maxrss of this process plus that of the largest child it waited for bounds what
    the suite held at once (the tests start their children one at a time)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    session.config._zoo_memory = (own, child)
    if own + child > MEMORY_LIMIT:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    own, child = getattr(config, "_zoo_memory", (0, 0))
    verdict = "OVER the limit" if own + child > MEMORY_LIMIT else "within the limit"
    terminalreporter.write_line(f"memory: pytest peaked at {own / 1024**3:.2f} GiB, its largest child at "
                                f"{child / 1024**3:.2f} GiB: {verdict} of {MEMORY_LIMIT / 1024**3:.0f} GiB")


# ----- a complete run for the hostile-review tests to copy (tests/zoo_process.py) ------------

@pytest.fixture(scope="module")
def reference(request, tmp_path_factory):
    """digits-softmax, exported and verified, trained for the module's REFERENCE_EPOCHS (default 2)."""
    from zoo_process import reference_run

    return reference_run(tmp_path_factory.mktemp(request.module.__name__), getattr(request.module, "REFERENCE_EPOCHS", 2))


@pytest.fixture
def run(reference, tmp_path):
    """A fresh copy of `reference` for one test to attack."""
    from zoo_process import copy_run

    return copy_run(reference, tmp_path)
