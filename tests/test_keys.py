"""zoo.spec.keys: dotted spec keys, parsed, set and compared in one place."""

import pytest

from zoo.core.errors import SpecError, UsageError
from zoo.spec.keys import diff, flatten, key_path, set_key, under


def test_key_paths_parse_names_and_indices():
    assert key_path("model.hidden[0].units") == ["model", "hidden", 0, "units"]
    for bad in ("", ".train", "train..lr", "[0]", "train.lr!", "model.hidden[x]"):
        with pytest.raises(UsageError, match="not a key path"):
            key_path(bad)


def test_set_key_copies_and_starts_optional_sections():
    spec = {"train": {"learning_rate": 0.1}, "data": {"synthetic": None}, "model": {"hidden": [{"units": 8}]}}
    out = set_key(spec, "train.learning_rate", 0.5)
    assert out["train"]["learning_rate"] == 0.5 and spec["train"]["learning_rate"] == 0.1
    assert set_key(spec, "data.synthetic.examples", 10)["data"]["synthetic"] == {"examples": 10}
    assert set_key(spec, "model.hidden[0].units", 64)["model"]["hidden"][0]["units"] == 64


@pytest.mark.parametrize("key,words", [
    ("model.hidden[3].units", "out of range"), ("train.learning_rate[0]", "is not a list"),
    ("train.learning_rate.x", "is not an object"),
])
def test_set_key_names_a_path_that_leads_nowhere(key, words):
    spec = {"train": {"learning_rate": 0.1}, "model": {"hidden": [{"units": 8}]}}
    with pytest.raises(SpecError, match=words):
        set_key(spec, key, 1, "--set")


def test_flatten_and_diff_compare_specs_key_by_key():
    a = {"train": {"epochs": 3, "seed": 0}, "name": "a"}
    b = {"train": {"epochs": 5, "seed": 0}, "name": "b"}
    assert flatten(a) == {"train.epochs": 3, "train.seed": 0, "name": "a"}
    assert diff(a, b) == {"name": ("a", "b"), "train.epochs": (3, 5)}
    assert diff(a, b, ignore=("name",)) == {"train.epochs": (3, 5)}
    assert under("train.schedule.kind", ["train.schedule"]) and not under("train.scheduler", ["train.schedule"])
