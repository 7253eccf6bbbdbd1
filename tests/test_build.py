"""zoo.stages.build: spec -> keras.Model, the run folder it starts, and safe loading."""

import pytest
from conftest import SPECS, catalog_specs, spec_dict

from zoo.core import contract, provenance, runs
from zoo.core.errors import UsageError


@pytest.fixture(scope="module")
def keras():
    from zoo.core.backend import import_keras

    return import_keras()


@pytest.mark.parametrize("path", catalog_specs(), ids=lambda p: p.stem)
def test_every_catalog_model_has_the_parameters_the_catalog_computes(keras, path):
    from zoo.spec import load_spec
    from zoo.spec.catalog import count_params
    from zoo.stages.build import build_model

    spec = load_spec(path)
    if spec.is_table:  # the width is the encoded columns': found from the data (tests/test_tabular.py)
        assert spec.model.input_shape is None and count_params(spec) is None
        return
    model = build_model(spec)
    assert model.count_params() == count_params(spec)
    assert model.layers[-1].name == (contract.LOGITS if spec.is_classifier else contract.PREDICTIONS)
    assert tuple(model.inputs[0].shape[1:]) == tuple(spec.model.input_shape)


def test_the_same_seed_builds_the_same_weights(keras):
    import numpy as np

    from zoo.spec import validate
    from zoo.stages.build import build_model

    spec = validate(spec_dict("digits-mlp"))
    keras.utils.set_random_seed(3)
    a = build_model(spec).get_weights()
    keras.utils.set_random_seed(3)
    b = build_model(spec).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_build_run_writes_the_resolved_spec_and_the_untrained_model_and_records_both(keras, tmp_path):
    from zoo.spec import dumps, load_spec
    from zoo.stages.build import build_run, load_model, summarize

    spec = load_spec(SPECS / "digits-softmax.json")
    run = tmp_path / spec.name
    with runs.locked(run):
        model = build_run(spec, run)
    assert (run / contract.SPEC_FILE).read_text() == dumps(spec)
    assert provenance.check(run, contract.MODEL_KERAS, stage="build")["inputs"] == {
        contract.SPEC_FILE: provenance.check(run, contract.SPEC_FILE)["sha256"]}
    assert load_model(run / contract.MODEL_KERAS).count_params() == model.count_params()
    assert [r["name"] for r in summarize(model)][-1] == contract.LOGITS


def test_load_model_names_a_missing_or_broken_file(keras, tmp_path):
    from zoo.stages.build import load_model

    with pytest.raises(UsageError, match="no such model file"):
        load_model(tmp_path / "absent.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a loadable Keras model"):
        load_model(tmp_path / "junk.keras")
