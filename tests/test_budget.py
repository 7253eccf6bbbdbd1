"""Specs that cannot exhaust the machine: the memory estimate at validation, data.limit and
validation edge cases, and files that are not what their .npz name says.

Every case is refused with one line and exit 2 (the spec) or 3 (the data), never the
"internal error" of exit 1 the review met when build or train ran out of memory.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import spec_dict, write_spec

from zoo.core.errors import DataError, SpecError
from zoo.spec import budget
from zoo.spec.load import validate
from zoo.stages.data import read_npz


def _zoo(*args, cwd, env=None):
    full = {**{k: v for k, v in os.environ.items() if k not in ("ZOO_DEBUG", budget.LIMIT_VARIABLE)},
            "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=full, timeout=300, stdin=subprocess.DEVNULL)


def _one_error(done, code, *words):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "internal error" not in lines[0], done.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _wide_mlp(units=65536, layers=3):
    spec = spec_dict("digits-mlp")
    spec["model"]["hidden"] = [{"units": units}] * layers
    return spec


def _huge_input():
    spec = spec_dict("digits-mlp")
    spec["model"]["input_shape"] = [10**15, 8]
    spec["data"] = {"dataset": "npz", "path": "x.npz"}
    return spec


def _huge_synthetic():
    return {"version": 1, "name": "big", "model": {"kind": "linear", "input_shape": [10_000]},
            "data": {"dataset": "synthetic_linear", "synthetic": {"w": [1.0] * 10_000, "num_examples": 10_000_000}}}


def _huge_output():
    spec = spec_dict("digits-mlp")
    spec["model"].update(num_classes=100_000, class_names=None, hidden=[{"units": 65536}])
    return spec


@pytest.mark.parametrize("make,path,part", [
    (_wide_mlp, "model.hidden", "parameters"),
    (_huge_input, "model.hidden", "parameters"),
    (_huge_synthetic, "data", "data"),
    (_huge_output, "model.hidden", "parameters"),
])
def test_a_spec_over_the_memory_limit_is_refused_at_validation_with_its_estimate(monkeypatch, make, path, part):
    monkeypatch.delenv(budget.LIMIT_VARIABLE, raising=False)
    with pytest.raises(SpecError) as e:
        validate(make())
    message = str(e.value)
    assert f"{path}: this spec (" in message and part in message
    assert "over the limit of 8.0 GiB" in message and "ZOO_MEMORY_LIMIT=" in message


def test_the_estimate_counts_what_training_keeps():
    spec = validate(spec_dict("digits-mlp"))  # 64 -> 64 -> 10, sgd, batch 32, 1,797 examples
    params = 64 * 64 + 64 + 64 * 10 + 10
    assert budget.parameters(spec) == params
    assert budget.estimate(spec) == {"parameters": params * 4 * 3, "activations": 32 * (64 + 64 + 10) * 8,
                                     "data": 1797 * 64 * 8}
    adam = spec_dict("digits-mlp")
    adam["train"]["optimizer"] = "adam"
    assert budget.estimate(validate(adam))["parameters"] == params * 4 * 7  # + 2 slots and their snapshot


def test_the_limit_is_overridable_and_a_bad_setting_keeps_the_default(monkeypatch):
    wide = _wide_mlp(units=16384, layers=2)  # ~268M parameters: 3.2 GiB with sgd
    monkeypatch.setenv(budget.LIMIT_VARIABLE, "2GiB")
    with pytest.raises(SpecError, match="over the limit of 2.0 GiB"):
        validate(wide)
    monkeypatch.setenv(budget.LIMIT_VARIABLE, "4GiB")
    assert validate(wide).model.hidden[0].units == 16384
    monkeypatch.setenv(budget.LIMIT_VARIABLE, "lots")
    assert budget.memory_limit() == budget.DEFAULT_LIMIT
    assert budget.parse_size("512 MiB") == 512 * 1024**2 and budget.parse_size("1000") == 1000
    assert budget.parse_size("3 parsecs") is None


@pytest.mark.parametrize("limit,validation,ok", [(1, 0.5, False), (1, 0.1, False), (1, 0.99, False), (2, 0.5, True),
                                                 (2, 0.9, True), (10, 0.9, True)])
def test_a_held_out_fraction_of_data_limit_must_leave_examples_to_train_on(limit, validation, ok):
    spec = spec_dict("digits-mlp")
    spec["data"]["limit"] = limit
    spec["train"]["validation"] = validation
    if ok:
        assert validate(spec).data.limit == limit
    else:
        with pytest.raises(SpecError, match="train.validation: holding out .* leaves none to train on"):
            validate(spec)


def test_the_commands_refuse_them_in_one_line_before_importing_anything(tmp_path):
    for spec in (_wide_mlp(), _huge_synthetic()):
        path = write_spec(tmp_path, spec)
        for command in (["check", path], ["build", path, "--out", tmp_path / "exports"]):
            _one_error(_zoo(*command, cwd=tmp_path), 2, "would take an estimated", "ZOO_MEMORY_LIMIT")
    limited = spec_dict("digits-mlp")
    limited["data"]["limit"] = 1
    limited["train"]["validation"] = 0.5
    _one_error(_zoo("train", write_spec(tmp_path, limited), "--out", tmp_path / "exports", cwd=tmp_path), 2,
               "leaves none to train on")
    assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())


# ----- files named .npz that are something else ------------------------------------------------

def _write_npz(path, n_train=3, **arrays):
    base = {"x_train": np.zeros((n_train, 4), np.float32), "y_train": np.zeros(n_train, np.int32),
            "x_test": np.zeros((2, 4), np.float32), "y_test": np.zeros(2, np.int32)}
    np.savez(path, **{**base, **arrays})
    return path


def _header_only_npz(path, shape):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for k in ("x_train", "y_train", "x_test", "y_test"):
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
            z.writestr(f"{k}.npy", header.getvalue())
    return path


@pytest.mark.parametrize("content,words", [
    (b"root:x:0:0:root:/root:/bin/bash\n", ["is a text file", "root:x:0"]),
    (b"x,y\n1,2\n", ["is a text file"]),
    (b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'", ["is a single .npy array"]),
    (pickle.dumps({"x_train": [1, 2]}), ["holds pickled Python objects"]),
    (b"\x00\x01\x02\xff\xfe binary", ["not an .npz (a zip archive"]),
    (b"", ["is empty"]),
])
def test_a_file_named_npz_is_reported_as_what_it_is(tmp_path, content, words):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_npz(path)
    for w in words:
        assert w in str(e.value), str(e.value)
    if "pickled" not in words[0]:
        assert "pickled" not in str(e.value)


def test_etc_passwd_as_data_is_a_text_file_exit_3(tmp_path):
    spec = spec_dict("digits-mlp")
    spec["data"] = {"dataset": "npz", "path": "/etc/passwd"}
    spec["model"]["class_names"] = None
    _one_error(_zoo("train", write_spec(tmp_path, spec), "--out", tmp_path / "exports", cwd=tmp_path), 3,
               "/etc/passwd: is a text file")


def test_an_npz_whose_headers_promise_too_much_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.delenv(budget.LIMIT_VARIABLE, raising=False)
    path = _header_only_npz(tmp_path / "bomb.npz", (10**6, 10**4))  # 40 GB each, a few hundred bytes on disk
    assert path.stat().st_size < 2000
    with pytest.raises(DataError, match="its arrays would take an estimated 298.0 GiB"):
        read_npz(path)
    assert set(read_npz(_write_npz(tmp_path / "ok.npz"))) == {"x_train", "y_train", "x_test", "y_test"}


def test_a_file_too_small_for_its_held_out_fraction_is_a_data_error(tmp_path):
    spec = spec_dict("digits-mlp")
    spec["model"].update(input_shape=[4], class_names=None)
    spec["data"] = {"dataset": "npz", "path": str(_write_npz(tmp_path / "one.npz", n_train=1))}
    spec["train"]["validation"] = 0.5
    _one_error(_zoo("train", write_spec(tmp_path, spec), "--out", tmp_path / "exports", cwd=tmp_path), 3,
               "leaves none to train on")
    assert json.loads(json.dumps(spec))  # the spec itself is valid: only the file is too small
