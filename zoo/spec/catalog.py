"""The catalog: the specs in a folder, summarized without loading TensorFlow."""

from __future__ import annotations

import math
from pathlib import Path

from zoo.core.errors import SpecError
from zoo.spec import Spec, load_spec, spec_dir


def count_params(spec: Spec) -> int | None:
    """What keras.Model.count_params() reports for build_model(spec), computed by hand
    (None for a table: its width comes from the data's columns)."""
    if spec.model.input_shape is None:
        return None
    width = math.prod(spec.model.input_shape)
    bias = 1 if spec.model.use_bias else 0
    total = 2 * width if spec.data.preprocessing.standardize else 0  # mean and std
    for layer in spec.model.hidden:
        total += width * layer.units + bias * layer.units
        width = layer.units
    return total + width * spec.num_outputs + bias * spec.num_outputs


def catalog(folder=None) -> list[dict]:
    rows = []
    for path in sorted(Path(folder or spec_dir()).glob("*.json")):
        if path.name == "schema.json":
            continue
        try:
            spec = load_spec(path)
        except SpecError as e:
            rows.append({"file": path.name, "kind": "?", "dataset": "?", "params": None,
                         "description": f"invalid: {e.problems[0][0]} {e.problems[0][1]}"})
            continue
        rows.append({"file": path.name, "name": spec.name, "kind": spec.model.kind,
                     "dataset": spec.data.dataset, "params": count_params(spec),
                     "description": spec.description})
    return rows
