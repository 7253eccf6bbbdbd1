"""Sweep grids compared after parsing, and an --out the machine cannot write: round two of the
review. Plans are made in-process (no storage needed); the command runs for real."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import SPECS

from zoo.core.errors import EnvironmentProblem, UsageError
from zoo.sweep.grid import plan


@pytest.mark.parametrize("sets", [
    ["train.learning_rate=1,1.0"],
    ["train.learning_rate=0.1,1e-1"],
    ["train.learning_rate=0.5,5e-1,0.25"],
    ['model.hidden=[{"units": 8}],[{"units": 8, "activation": "relu"}]'],  # the default spelled out
    ["train.optimizer=sgd,\"sgd\""],
])
def test_values_equal_once_parsed_are_one_value(sets):
    with pytest.raises(UsageError, match="make the same spec|a value is repeated"):
        plan(SPECS / "digits-mlp.json", sets)


def test_distinct_values_still_make_distinct_trials():
    p = plan(SPECS / "digits-mlp.json", ["train.learning_rate=1,0.5"], seeds="0,1")
    assert len({pt.run for pt in p.points}) == 4


def test_an_out_the_machine_cannot_write_is_exit_9(tmp_path):
    """/sys refuses a new folder (EPERM; a read-only file system is EROFS): the environment's, exit 9."""
    if os.access("/sys", os.W_OK) and not os.path.isdir("/sys/class"):
        pytest.skip("no sysfs here")
    env = {**{k: v for k, v in os.environ.items() if k != "ZOO_DEBUG"}, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "zoo", "sweep", SPECS / "digits-softmax.json", "--set",
                           "train.learning_rate=0.1,0.2", "--epochs", "1", "--out", "/sys/zoo-sweep"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == EnvironmentProblem.exit_code == 9, done.stderr
    assert len(lines) == 1 and "/sys/zoo-sweep" in lines[0] and "cannot create the sweep folder" in lines[0]
    assert not os.path.exists("/sys/zoo-sweep")


# ----- storage that accepts and never answers; a study.db corrupt past its first page ------------

def _sweep(tmp_path, *extra, timeout=150):
    env = {**{k: v for k, v in os.environ.items() if k not in ("ZOO_DEBUG", "ZOO_SWEEP_STORAGE")},
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "zoo", "sweep", SPECS / "digits-softmax.json", "--set",
                           "train.learning_rate=0.1,0.2", "--epochs", "1", "--out", tmp_path / "exports", *extra],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("scheme", ["mysql", "postgresql"])
def test_a_storage_that_never_answers_times_out_with_exit_2_and_a_masked_password(tmp_path, scheme):
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nobody ever answers
    try:
        started = time.monotonic()
        done = _sweep(tmp_path, "--storage", f"{scheme}://zoo:s3cret@127.0.0.1:{silent.getsockname()[1]}/zoo")
        took = time.monotonic() - started
    finally:
        silent.close()
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "127.0.0.1" in lines[0] and "***" in lines[0] and "s3cret" not in done.stderr
    assert took < 100, took


@pytest.mark.parametrize("first,last", [(16, 100), (100, 4096), (4096, 8192), (8192, 12288), (20480, 24576)])
def test_a_study_db_corrupt_anywhere_is_exit_2(tmp_path, first, last):
    import random

    import optuna

    from zoo.sweep.study import connect, default_storage, sweep_dir

    the_plan = plan(SPECS / "digits-softmax.json", ["train.learning_rate=0.1,0.2"], fixed={"train.epochs": 1})
    url = default_storage(tmp_path / "exports", the_plan.default_study)
    sweep_dir(tmp_path / "exports", the_plan.default_study).mkdir(parents=True)
    optuna.create_study(storage=connect(url), study_name=the_plan.default_study)
    path = url[len("sqlite:///"):]
    data, rnd = bytearray(open(path, "rb").read()), random.Random(first)
    for i in range(first, min(last, len(data))):
        data[i] = rnd.randrange(256)
    with open(path, "wb") as f:
        f.write(bytes(data))
    done = _sweep(tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "internal error" not in lines[0] and "study.db" in lines[0], done.stderr


# ----- the same storage failures under `zoo sweep --status` and `python -m zoo.sweep.worker` ---------

STUDY = "digits-softmax-sweep"


def _other(tmp_path, command, url, study=STUDY, timeout=150):
    """`zoo sweep --status` (every sweep in the storage, or one) or a worker process, on `url`."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("ZOO_DEBUG", "ZOO_SWEEP_STORAGE")},
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = {"status": ["-m", "zoo", "sweep", "--status", "--storage", url],
            "status --study": ["-m", "zoo", "sweep", "--status", "--storage", url, "--study", study],
            "status --out": ["-m", "zoo", "sweep", "--status", "--out", tmp_path / "exports"],
            "worker": ["-m", "zoo.sweep.worker", "--study", study, "--storage", url, "--out", tmp_path / "exports"],
            }[command]
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _one_storage_error(done, *words):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("Error: --storage ") and "Traceback" not in done.stderr, done.stderr
    assert "internal error" not in lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.slow
@pytest.mark.parametrize("command", ["status", "status --study", "worker"])
@pytest.mark.parametrize("scheme", ["mysql", "postgresql"])
def test_status_and_workers_on_a_storage_that_never_answers_are_exit_2(tmp_path, scheme, command):
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        started = time.monotonic()
        done = _other(tmp_path, command, f"{scheme}://zoo:s3cret@127.0.0.1:{silent.getsockname()[1]}/zoo")
        took = time.monotonic() - started
    finally:
        silent.close()
    _one_storage_error(done, "127.0.0.1", "***")
    assert "s3cret" not in done.stderr and took < 100, took


@pytest.mark.parametrize("command", ["status", "status --study", "status --out", "worker"])
@pytest.mark.parametrize("first,last", [(100, 4096), (4096, 8192), (8192, 12288), (20480, 24576)])
def test_status_and_workers_on_a_study_db_corrupt_anywhere_are_exit_2(tmp_path, first, last, command):
    """The sweep's own study (enqueued trials and all), its study.db scrambled over [first, last)."""
    import random

    from zoo.sweep.study import connect, open_study, sweep_dir

    the_plan = plan(SPECS / "digits-softmax.json", ["train.learning_rate=0.1,0.2"], fixed={"train.epochs": 1})
    folder = sweep_dir(tmp_path / "exports", STUDY)
    folder.mkdir(parents=True)
    url = f"sqlite:///{folder / 'study.db'}"
    open_study(connect(url), STUDY, the_plan, 10, log=lambda m: None)
    data, rnd = bytearray((folder / "study.db").read_bytes()), random.Random(first)
    for i in range(first, min(last, len(data))):
        data[i] = rnd.randrange(256)
    (folder / "study.db").write_bytes(bytes(data))
    _one_storage_error(_other(tmp_path, command, url), "study.db")
