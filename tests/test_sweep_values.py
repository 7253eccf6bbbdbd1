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
