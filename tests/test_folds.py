"""K-fold cross-validation (zoo.stages.train.folds): the folds, and any spec's metrics.json `cv`."""

import json

import numpy as np
import pytest
from conftest import spec_dict

from zoo.core.errors import DataError
from zoo.stages.train.folds import fold_indices


def test_folds_cover_every_example_once_and_are_seeded():
    parts = fold_indices(103, 5, seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert sorted(len(p) for p in parts) == [20, 20, 21, 21, 21]
    assert all(np.array_equal(a, b) for a, b in zip(parts, fold_indices(103, 5, seed=3)))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, fold_indices(103, 5, seed=4)))
    with pytest.raises(DataError, match="too few for 5 folds"):
        fold_indices(4, 5, 0)


def test_an_image_spec_cross_validates_then_trains_the_final_model(tmp_path):
    import zoo

    spec = spec_dict("digits-softmax")
    spec["train"].update(epochs=2, folds=3)
    lines = []
    metrics = zoo.train(spec, out=tmp_path, log=lines.append)
    cv = metrics["cv"]
    assert cv["folds"] == 3 and len(cv["per_fold"]) == 3
    assert sum(f["examples"] for f in cv["per_fold"]) == metrics["train_examples"]
    accuracy = [f["accuracy"] for f in cv["per_fold"]]
    assert cv["mean"]["accuracy"] == pytest.approx(np.mean(accuracy))
    assert cv["std"]["accuracy"] == pytest.approx(np.std(accuracy))
    assert 0.5 < cv["mean"]["accuracy"] <= 1.0
    assert any(line.startswith("3-fold cross-validation: loss") for line in lines)
    assert [line.split(":")[0] for line in lines if line.startswith("fold ")] == ["fold 1/3", "fold 2/3", "fold 3/3"]
    on_disk = json.loads((tmp_path / "digits-softmax" / "metrics.json").read_text())
    assert on_disk["cv"] == cv and on_disk["epochs"] == 2
