"""The model card's Python, JavaScript and C++ programs run as written and agree with onnxruntime.

Each snippet is cut out of card.md verbatim, saved in (a copy of) the run folder and run
there: Python with this interpreter, the JavaScript ES module with Node and
onnxruntime-node, the C++ program built with g++ against onnxruntime's headers and
the pip wheel's libonnxruntime. Node, onnxruntime-node and the headers come from
`bash .ci/setup-web.sh`; where they are absent those tests skip and say so.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATASETS, ROOT, spec_dict, write_spec

ENABLE = "run `bash .ci/setup-web.sh` (as root) to install it"
HEADER_DIRS = [Path(p) for p in (os.environ.get("ONNXRUNTIME_INCLUDE_DIR"),) if p] + [
    ROOT / ".deps" / "onnxruntime" / "include", Path("/usr/include/onnxruntime"), Path("/usr/local/include/onnxruntime")]


@pytest.fixture(scope="module", params=["digits-softmax", "linear-synthetic"])
def run(request, tmp_path_factory):
    """A classifier and a regression model, trained for an epoch and exported by the real CLI."""
    folder = tmp_path_factory.mktemp(request.param)
    path = write_spec(folder, spec_dict(request.param))
    done = subprocess.run([sys.executable, "-m", "zoo", "run", str(path), "--epochs", "1", "--quiet",
                           "--out", str(folder / "exports"), "--data-dir", str(DATASETS)],
                          capture_output=True, text=True, cwd=folder, timeout=240)
    assert done.returncode == 0, done.stderr
    return folder / "exports" / spec_dict(request.param)["name"]


SECTIONS = {"python": "## Python", "js": "## JavaScript", "cpp": "## C++"}


def snippet(run: Path, lang: str) -> str:
    """The one `lang` program of its own section (the serving section has a Python client of its own)."""
    section = (run / "card.md").read_text().split(SECTIONS[lang], 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{lang}\n(.*?)```", section, re.S)
    assert len(blocks) == 1, f"card.md's {SECTIONS[lang]} section has {len(blocks)} {lang} blocks"
    return blocks[0]


def expected_lines(run: Path) -> list[list[str]]:
    """What every snippet must print: onnxruntime in Python on test_data_set_0, one row per example."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from zoo.core.contract import Contract

    c = Contract.from_onnx(run / "model.onnx")
    x = numpy_helper.to_array(onnx.load_tensor(str(run / "test_data_set_0" / "input_0.pb")))
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    if c.is_classifier:
        (p,) = session.run(["probabilities"], {"input": x})
        return [[i, int(row.argmax()), c.labels()[row.argmax()], float(row.max())] for i, row in enumerate(p)]
    (y,) = session.run(["predictions"], {"input": x})
    return [[i, *map(float, row)] for i, row in enumerate(y)]


def check_output(stdout: str, run: Path):
    want = expected_lines(run)
    lines = stdout.strip().splitlines()
    assert len(lines) == len(want), stdout
    for line, expected in zip(lines, want):
        fields = line.split()
        if len(expected) == 4 and isinstance(expected[2], str):  # index, class, name (may hold spaces), probability
            assert [int(fields[0]), int(fields[1]), " ".join(fields[2:-1])] == expected[:3], line
            assert float(fields[-1]) == pytest.approx(expected[3], abs=2e-6)
        else:
            assert int(fields[0]) == expected[0]
            np.testing.assert_allclose([float(v) for v in fields[1:]], expected[1:], atol=2e-6, rtol=1e-5)


def in_copy(run, tmp_path) -> Path:
    """A copy of the run folder: the user's working folder, where the card says to run the programs."""
    here = tmp_path / run.name
    shutil.copytree(run, here, ignore=shutil.ignore_patterns("checkpoints", "web"))
    return here


def test_python_snippet_runs_as_written(run, tmp_path):
    here = in_copy(run, tmp_path)
    (here / "predict.py").write_text(snippet(run, "python"))
    done = subprocess.run([sys.executable, "predict.py"], cwd=here, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    check_output(done.stdout, run)


def test_javascript_snippet_runs_in_node_as_an_es_module(run, tmp_path):
    node = shutil.which("node")
    modules = ROOT / "node_modules"
    if node is None or not (modules / "onnxruntime-node" / "package.json").is_file():
        pytest.skip(f"needs node and onnxruntime-node in {modules}; {ENABLE}")
    here = in_copy(run, tmp_path)
    (here / "node_modules").symlink_to(modules)  # where `npm install onnxruntime-node` would have put it
    (here / "predict.mjs").write_text(snippet(run, "js"))
    done = subprocess.run([node, "predict.mjs"], cwd=here, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    check_output(done.stdout, run)


def onnxruntime_library(tmp_path) -> Path:
    """A folder with libonnxruntime.so(.1) from the pip wheel (its SONAME file is missing: link it)."""
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    found = sorted(capi.glob("libonnxruntime.so.1*"))
    if not found:
        pytest.skip(f"no libonnxruntime.so.1.* in {capi}")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libonnxruntime.so.1").symlink_to(found[-1])
    (lib / "libonnxruntime.so").symlink_to("libonnxruntime.so.1")
    return lib


def test_cpp_snippet_builds_and_runs(run, tmp_path):
    compiler = shutil.which("g++")
    include = next((d for d in HEADER_DIRS if (d / "onnxruntime_cxx_api.h").is_file()), None)
    if compiler is None or include is None:
        pytest.skip(f"needs g++ and onnxruntime's C++ headers (looked in {', '.join(map(str, HEADER_DIRS))}; "
                    f"the pip wheel has none); {ENABLE}, or set ONNXRUNTIME_INCLUDE_DIR")
    here = in_copy(run, tmp_path)
    lib = onnxruntime_library(tmp_path)
    (here / "predict.cpp").write_text(snippet(run, "cpp"))
    build = subprocess.run([compiler, "-std=c++17", "-O1", "predict.cpp", f"-I{include}", f"-L{lib}", "-lonnxruntime",
                            f"-Wl,-rpath,{lib}", "-o", "predict"], cwd=here, capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, build.stderr[-3000:]
    done = subprocess.run(["./predict"], cwd=here, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    check_output(done.stdout, run)


def test_card_says_how_the_snippets_were_tested(run):
    card = (run / "card.md").read_text()
    assert "## How these snippets were tested" in card and "tests/test_card_snippets.py" in card
    assert 'import * as ort from "onnxruntime-node"' in card and "require(" not in card
    assert "int main()" in card
