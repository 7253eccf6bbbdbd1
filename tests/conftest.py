"""Shared fixtures. Real data comes from ../shared/datasets (or $ZOO_TEST_DATA)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
DATASETS = Path(os.environ.get("ZOO_TEST_DATA", ROOT.parent / "shared" / "datasets"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def catalog_specs():
    return sorted(p for p in SPECS.glob("*.json") if p.name != "schema.json")


@pytest.fixture
def datasets():
    if not (DATASETS / "fashion-mnist").is_dir():
        pytest.skip(f"real datasets not found at {DATASETS}")
    return DATASETS


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
