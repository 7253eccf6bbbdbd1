"""`zoo serve` serves only what `zoo verify` would pass: a model.onnx edited by hand or
copied in from another run, in the run or in its Triton repository, is exit 8 before
anything starts (the real `zoo serve` command; it never gets as far as Triton)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import onnx
import pytest
from conftest import SPECS

from zoo.core.errors import ProvenanceError
from zoo.deploy.serve.models import check_served_file, find_models

PORTS = ["--port", "18311", "--grpc-port", "18312", "--metrics-port", "18313"]


def _zoo(*args, cwd, timeout=240):
    env = {**{k: v for k, v in os.environ.items() if k != "ZOO_DEBUG"}, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of digits-softmax trained differently, each exported with its Triton repository."""
    folder = tmp_path_factory.mktemp("serveprov")
    made = []
    for epochs, out in ((2, "a"), (3, "b")):
        done = _zoo("run", SPECS / "digits-softmax.json", "--epochs", epochs, "--out", folder / out, cwd=folder)
        assert done.returncode == 0, done.stderr
        run = folder / out / "digits-softmax"
        done = _zoo("export", run, "--triton", cwd=folder)
        assert done.returncode == 0, done.stderr
        made.append(run)
    return made


@pytest.fixture
def run(runs, tmp_path):
    copy = tmp_path / "exports" / "digits-softmax"
    shutil.copytree(runs[0], copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def _edit(path):
    model = onnx.load(str(path))
    model.doc_string = "edited by hand"
    onnx.save(model, str(path))


REPO_ONNX = "triton/digits-softmax/1/model.onnx"


# (what is damaged, which file, what zoo serve is given); the run's own model.onnx intact with its
# triton/ copy damaged is a run that serves (its model.onnx is what verify passes), so not here
CASES = [(damage, "model.onnx", serve) for damage in ("edit", "other-run", "metrics")
         for serve in ("run", "repository", "file")]
CASES += [(damage, REPO_ONNX, serve) for damage in ("edit", "other-run") for serve in ("repository", "file")]


@pytest.mark.parametrize("damage,target,serve", CASES)
def test_serve_refuses_what_verify_refuses_with_exit_8_naming_the_file(runs, run, tmp_path, damage, target, serve):
    path = run / target
    if damage == "edit":
        _edit(path)
    elif damage == "other-run":
        shutil.copyfile(runs[1] / target, path)
    else:  # metrics.json touched: the chain to model.onnx is broken
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["test"]["accuracy"] = 0.999
        (run / "metrics.json").write_text(json.dumps(metrics))
    what = {"run": run, "repository": run / "triton", "file": run / REPO_ONNX}[serve]
    done = _zoo("serve", what, *PORTS, cwd=tmp_path, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 8, (done.returncode, done.stderr[-2000:], done.stdout[-500:])
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Triton" not in done.stdout, done.stderr
    if target == "model.onnx":
        assert _zoo("verify", run, cwd=tmp_path).returncode == 8, "verify refuses the same run"


def test_an_intact_run_and_its_repository_pass_the_check(run):
    for s in find_models([run]) + find_models([run / "triton"]):
        check_served_file(s.onnx)
    check_served_file(run / REPO_ONNX)


def test_a_file_outside_every_run_is_checked_for_its_contract_only(run, tmp_path):
    loose = tmp_path / "loose" / "model.onnx"
    loose.parent.mkdir()
    shutil.copyfile(run / "model.onnx", loose)
    check_served_file(loose)  # no record to check, and none claimed
    unrecorded = run / "triton" / "digits-softmax" / "2" / "model.onnx"
    unrecorded.parent.mkdir()
    shutil.copyfile(run / "model.onnx", unrecorded)
    with pytest.raises(ProvenanceError, match="has no provenance record"):
        check_served_file(unrecorded)


@pytest.mark.parametrize("name", ["a\nb", "\tT-shirt", "x\ry", "p\u2028q"])
def test_a_foreign_onnx_whose_class_names_hold_control_characters_gets_no_labels_file(run, tmp_path, name):
    """The spec refuses such names; an ONNX file made elsewhere is refused where labels.txt is written."""
    from zoo.core.contract import META_CLASS_NAMES
    from zoo.core.errors import UsageError
    from zoo.deploy.triton import write_repository

    model = onnx.load(str(run / "model.onnx"))
    entry = next(p for p in model.metadata_props if p.key == META_CLASS_NAMES)
    names = json.loads(entry.value)
    names[3] = name
    entry.value = json.dumps(names)
    foreign = tmp_path / "foreign" / "model.onnx"
    foreign.parent.mkdir()
    onnx.save(model, str(foreign))
    with pytest.raises(UsageError, match="control character"):
        write_repository(foreign, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()  # refused before anything is written
