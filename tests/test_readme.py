"""The README's promises, run as written: every fenced example is run here, or names the test
that runs it (or why it cannot run on a test machine)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, need_data

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, re.M | re.S)

# Each block, by its first line, and where it is checked: a test of this file, another test file,
# or why no test runs it.
ACCOUNTED = {
    "pip install -e . && zoo run specs/digits-softmax.json": "test_the_quick_start_runs_as_written",
    "pip install -e '.[test]' && pytest": "the suite itself (.ci/run runs it on a clean clone)",
    "zoo list": "test_the_tour_runs_as_written",
    "{": "test_the_spec_reference_example_is_a_valid_spec",
    "$ zoo check bad.json": "test_the_check_example_prints_what_the_readme_shows",
    "import json": "test_the_python_api_example_runs_as_written",
    "zoo sweep specs/digits-mlp.json --set train.learning_rate=0.05,0.1,0.2 \\":
        "test_the_sweep_example_runs_as_written",
    "#!/bin/bash": "a Slurm array job: needs a cluster; the same command is the sweep example's",
    "# Kubernetes: a Job of eight pods, each one worker": "a Kubernetes Job: needs a cluster",
    "bash .ci/setup-web.sh":
        "test_the_page_example_runs_as_written (setup-web.sh itself runs in .ci/run)",
    "await window.zoo.ready;": "tests/test_web.py drives window.zoo.predict in Chromium",
    "pip install -e '.[serve]' && pip install --no-deps 'nvidia-pytriton==0.7.0'":
        "tests/test_serve.py (export --triton, zoo serve, the metadata request); tests/test_serve_table.py (the stub's NumPy 1)",
    "zoo/__init__.py, __main__.py, _entry.py   the face (re-exports api) and the process's start-up":
        "the layout, not a command",
}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_OUT", "ZOO_SPECS", "ZOO_DEBUG")}
    return {**env, **extra}


def _zoo(args, cwd, env=None, timeout=240):
    return subprocess.run([sys.executable, "-m", "zoo", *args], cwd=cwd, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _first(body: str) -> str:
    """A block's first line without its trailing comment: the block's name here."""
    line = body.splitlines()[0]
    return line if line.startswith("#") else line.split("  #", 1)[0].strip()


def _block(first_line: str) -> str:
    return next(body for _, body in BLOCKS if _first(body) == first_line)


def _catalog_here(tmp_path):
    (tmp_path / "specs").symlink_to(ROOT / "specs", target_is_directory=True)


def test_every_example_is_run_or_says_where():
    firsts = [_first(body) for _, body in BLOCKS]
    assert sorted(firsts) == sorted(ACCOUNTED), set(firsts) ^ set(ACCOUNTED)
    for first, where in ACCOUNTED.items():
        if where.startswith("test_"):
            assert where.split()[0] in globals(), where


def tour_commands() -> list[str]:
    block = README.split("## A short tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines() if line.split("#", 1)[0].strip()]


@pytest.mark.slow
def test_the_tour_runs_as_written(tmp_path):
    """Every command of the tour, in order, in a fresh folder with the catalog in specs/."""
    data = need_data()
    _catalog_here(tmp_path)
    env = _env()
    commands = tour_commands()
    assert any(c.startswith("zoo predict") for c in commands)
    for command in commands:
        if command.startswith("export ZOO_DATA_DIR="):
            env["ZOO_DATA_DIR"] = str(data)  # ../shared/datasets, wherever this checkout is
            continue
        assert command.startswith("zoo "), command
        args = command.split()[1:]
        for arg in args:  # every file the tour names exists by the time the command runs
            if re.search(r"\.(json|onnx|pb|png|npy|csv)$", arg):
                assert (tmp_path / arg).is_file(), f"{command}: {arg} does not exist"
        done = _zoo(args, tmp_path, env)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
    assert (tmp_path / "exports" / "fashion-mnist-mlp" / "verify.json").is_file()


@pytest.mark.slow
def test_the_quick_start_runs_as_written(tmp_path):
    """`zoo run specs/digits-softmax.json` (after the pip install), ending with what to do next."""
    _catalog_here(tmp_path)
    command = _block("pip install -e . && zoo run specs/digits-softmax.json").split("&&")[1].split()
    done = _zoo(command[1:], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "zoo predict exports/digits-softmax/model.onnx" in done.stdout
    assert json.loads((tmp_path / "exports/digits-softmax/verify.json").read_text())["status"] == "passed"


def test_the_spec_reference_example_is_a_valid_spec():
    from zoo.spec import validate
    from zoo.stages.data import FASHION_MNIST_CLASSES

    example = json.loads(_block("{"))
    assert example["model"]["class_names"][-1] == "..."  # shortened for the page: the whole list validates
    example["model"]["class_names"] = FASHION_MNIST_CLASSES
    assert validate(example, "README").name == "fashion-mnist-mlp"


def test_the_check_example_prints_what_the_readme_shows(tmp_path):
    shown = _block("$ zoo check bad.json").strip().splitlines()
    spec = json.loads((ROOT / "specs" / "fashion-mnist-mlp.json").read_text())
    spec["model"]["hidden"][0]["units"] = -3
    spec["train"]["lr"] = 0.1
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    done = _zoo(["check", "bad.json"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == shown[1:]


@pytest.mark.slow
def test_the_python_api_example_runs_as_written(tmp_path):
    _catalog_here(tmp_path)
    done = subprocess.run([sys.executable, "-c", _block("import json")], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "passed" in done.stdout.splitlines() and "'top'" in done.stdout


@pytest.mark.slow
def test_the_sweep_example_runs_as_written(tmp_path):
    _catalog_here(tmp_path)
    lines = _block("zoo sweep specs/digits-mlp.json --set train.learning_rate=0.05,0.1,0.2 \\").replace("\\\n", " ")
    commands = [line.split("#", 1)[0].split() for line in lines.splitlines() if line.strip()]
    for command in commands:
        done = _zoo(command[1:], tmp_path, timeout=900)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert "18/18 trials finished (18 complete)" in done.stdout, done.stdout


@pytest.mark.slow
def test_the_page_example_runs_as_written(tmp_path):
    """`zoo export RUN --web`, then `zoo web RUN` serves it and says where (the browser part: tests/test_web.py)."""
    _catalog_here(tmp_path)
    lines = _block("bash .ci/setup-web.sh").splitlines()[1:]
    export, web = ([c for c in line.split("#", 1)[0].split()] for line in lines)
    assert _zoo(["run", "specs/digits-softmax.json", "--epochs", "2", "--quiet"], tmp_path).returncode == 0
    done = _zoo(export[1:], tmp_path)
    assert done.returncode == 0 and (tmp_path / "exports/digits-softmax/web/index.html").is_file(), done.stderr
    server = subprocess.Popen([sys.executable, "-m", "zoo", *web[1:], "--port", "0"], cwd=tmp_path, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        said = server.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", said).group(0)
        import urllib.request

        with urllib.request.urlopen(url, timeout=10) as page:
            assert b"zoo.js" in page.read()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_serve_extra_leaves_every_requirement_of_tensorflow_and_tritonclient_met():
    """What the README says of the serve extra's protobuf and ml-dtypes: both packages' pins hold together."""
    from packaging.requirements import Requirement

    for package in ("tensorflow", "tritonclient"):
        try:
            requires = importlib.metadata.requires(package) or []
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{package} is not installed (pip install -e '.[serve]')")
        for text in requires:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({"extra": "grpc" if package == "tritonclient" else ""}):
                continue
            if req.name.replace("_", "-").lower() not in ("protobuf", "ml-dtypes"):
                continue
            have = importlib.metadata.version(req.name)
            assert req.specifier.contains(have, prereleases=True), f"{package} needs {req}, installed {have}"


def test_every_exit_code_is_documented():
    from zoo.core.errors import EXIT_CODES

    table = README.split("## Failure modes", 1)[1]
    for code in EXIT_CODES:
        assert re.search(rf"^\| {code} \|", table, re.M), f"exit {code} is missing from the README's table"
