"""zoo.stages.data: where the data is looked for, and a process that keeps what it loaded (a sweep's worker)."""

import os

import numpy as np
import pytest
from conftest import spec_dict

from zoo.spec import validate
from zoo.stages import data


@pytest.fixture
def keeping():
    data.keep_loaded()
    yield
    data.keep_loaded(False)


def _npz_spec(path, **train):
    return validate({"version": 1, "name": "tiny", "model": {"kind": "softmax", "input_shape": [3], "num_classes": 2},
                     "data": {"dataset": "npz", "path": str(path)}, "train": {"epochs": 1, **train}}, "test")


def _write(path, seed):
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.normal(size=(8, 3)).astype("float32"), y_train=rng.integers(0, 2, 8),
             x_test=rng.normal(size=(4, 3)).astype("float32"), y_test=rng.integers(0, 2, 4))


def test_a_keeping_process_loads_the_same_data_once_and_again_when_the_file_changes(tmp_path, keeping):
    path = tmp_path / "tiny.npz"
    _write(path, 0)
    first = data.load_dataset(_npz_spec(path))
    assert data.load_dataset(_npz_spec(path, learning_rate=0.5)) is first  # other train settings: same data
    assert not first.x_train.flags.writeable  # shared by every trial: nobody may change it
    _write(path, 1)
    os.utime(path, ns=(1, 1))  # another file in its place
    again = data.load_dataset(_npz_spec(path))
    assert again is not first and not np.array_equal(again.x_train, first.x_train)
    # a split drawn from the seed is the seed's: another seed, other data
    digits = validate(spec_dict("digits-softmax"), "digits")
    other = validate({**spec_dict("digits-softmax"), "train": {**spec_dict("digits-softmax")["train"], "seed": 1}}, "x")
    assert data.load_dataset(digits) is data.load_dataset(digits)
    assert data.load_dataset(other) is not data.load_dataset(digits)


def test_without_keeping_every_call_loads_afresh(tmp_path):
    path = tmp_path / "tiny.npz"
    _write(path, 0)
    assert data.load_dataset(_npz_spec(path)) is not data.load_dataset(_npz_spec(path))


def test_digits_read_from_scikit_learns_file_are_load_digits_exactly():
    from sklearn.datasets import load_digits

    x, y = data.digits_arrays()
    d = load_digits()
    assert x.dtype == np.float32 and x.shape == (1797, 8, 8)
    assert np.array_equal(x, d.images.astype("float32")) and np.array_equal(y, d.target)
