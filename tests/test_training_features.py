"""The trainer's features: initializers, LeakyReLU, schedules, early stopping, honest
resume, the compiled epoch loop against model.fit, the Python API and the plots.

All on scikit-learn's 8x8 digits (shipped, no data folder), a few epochs each.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, spec_dict, write_spec

from zoo.core.errors import SpecError, UsageError
from zoo.spec import validate


@pytest.fixture(scope="module")
def keras():
    from zoo.core.backend import import_keras

    return import_keras()


def _spec(name="digits-softmax", **train):
    data = spec_dict(name)
    data["train"].update(train)
    return data


def _train(data, run, **kw):
    from zoo.stages.train import train_run as train

    return train(validate(data), run, quiet=True, log=lambda m: None, **kw)


def _history(run):
    return json.loads((run / "history.json").read_text())


def _weights(path):
    from zoo.stages.build import load_model as load_checkpoint

    return [np.asarray(w) for w in load_checkpoint(path).get_weights()]


# ----- kernel_initializer ---------------------------------------------------------------------

def _kernel(keras, init, units=2000):
    from zoo.stages.build import build_model

    data = spec_dict("digits-mlp")
    data["model"]["hidden"] = [{"units": units}]
    data["model"]["kernel_initializer"] = init
    return np.asarray(build_model(validate(data)).get_layer("hidden_1").kernel)  # (64, units)


def test_he_normal_is_pytorchs_kaiming_normal(keras):
    w = _kernel(keras, "he_normal")
    std = math.sqrt(2 / 64)  # kaiming_normal_(mode="fan_in", nonlinearity="leaky_relu", a=0): gain sqrt(2)
    assert abs(w.mean()) < 0.01 * std * 10
    assert w.std() == pytest.approx(std, rel=0.02)
    # untruncated: a normal puts 1.24% of its mass beyond 2.5 sd (Keras's HeNormal truncates at 2 sd)
    assert np.mean(np.abs(w) > 2.5 * std) == pytest.approx(0.0124, abs=0.002)


def test_he_normal_beside_torchs_own_draw(keras):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch) for the side-by-side draw")
    w = _kernel(keras, "he_normal")
    t = torch.empty(2000, 64)
    torch.nn.init.kaiming_normal_(t)  # PyTorch's (out, in) layout: fan_in = 64
    assert w.std() == pytest.approx(float(t.std()), rel=0.03)


def test_glorot_uniform_and_random_normal(keras):
    w = _kernel(keras, "glorot_uniform")
    limit = math.sqrt(6 / (64 + 2000))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    assert w.std() == pytest.approx(limit / math.sqrt(3), rel=0.02)  # uniform(-a, a) has sd a / sqrt(3)
    w = _kernel(keras, "random_normal")
    assert w.std() == pytest.approx(0.01, rel=0.02) and abs(w.mean()) < 1e-3  # d2l's normal(0, 0.01)
    w = _kernel(keras, {"name": "random_normal", "stddev": 0.2})
    assert w.std() == pytest.approx(0.2, rel=0.02)
    assert np.mean(np.abs(w) > 0.5) == pytest.approx(0.0124, abs=0.002)  # untruncated


def test_leaky_relu_uses_pytorchs_slope_and_exports_as_a_layer(keras):
    from zoo.stages.build import build_model

    data = spec_dict("mnist10k-mlp")
    model = build_model(validate(data))
    layer = model.get_layer("leaky_relu_1")
    assert layer.negative_slope == pytest.approx(0.01)
    assert model.get_layer("hidden_1").activation.__name__ == "linear"
    assert np.allclose(np.asarray(layer(np.array([[-2.0, 3.0]], "float32"))), [[-0.02, 3.0]])
    data["model"]["hidden"][0]["negative_slope"] = 0.2
    assert build_model(validate(data)).get_layer("leaky_relu_1").negative_slope == pytest.approx(0.2)


def test_the_seeds_mnist_recipe_is_in_the_catalog():
    for name in ("mnist-mlp", "mnist10k-mlp"):
        spec = validate(spec_dict(name))
        assert [h.units for h in spec.model.hidden] == [200, 200]
        assert {h.activation for h in spec.model.hidden} == {"leaky_relu"}
        assert spec.model.kernel_initializer == "he_normal"
        t = spec.train
        assert (t.optimizer, t.learning_rate, t.batch_size, t.epochs, t.momentum) == ("sgd", 0.01, 200, 10, 0.0)


# ----- schedules ---------------------------------------------------------------------------------

def test_schedules_give_the_right_rate_per_epoch():
    from zoo.stages.train.recipe import learning_rate_at

    def train(schedule, lr=0.1, epochs=10):
        return validate(_spec(learning_rate=lr, epochs=epochs, schedule=schedule)).train

    t = train({"kind": "constant"})
    assert [learning_rate_at(t, e) for e in range(10)] == [0.1] * 10
    t = train({"kind": "step", "step_size": 3, "gamma": 0.5})
    assert [learning_rate_at(t, e) for e in range(7)] == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025])
    t = train({"kind": "step"})  # PyTorch's StepLR defaults would need step_size; zoo's: 1 and 0.1
    assert [learning_rate_at(t, e) for e in range(3)] == pytest.approx([0.1, 0.01, 0.001])
    t = train({"kind": "cosine"}, epochs=4)
    assert [learning_rate_at(t, e) for e in range(4)] == pytest.approx(
        [0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.05 * (1 + math.cos(3 * math.pi / 4))])
    t = train({"kind": "cosine", "min_learning_rate": 0.02}, epochs=2)
    assert [learning_rate_at(t, e) for e in range(2)] == pytest.approx([0.1, 0.06])


def test_schedule_is_applied_and_recorded_and_survives_resume(keras, tmp_path):
    # with momentum: the resumed optimizer, rebuilt from the spec, must carry its buffers over
    schedule = {"kind": "step", "step_size": 2, "gamma": 0.5}
    _train(_spec(epochs=5, schedule=schedule, momentum=0.9), tmp_path / "whole")
    got = [h["learning_rate"] for h in _history(tmp_path / "whole")]
    assert got == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025], rel=1e-6)  # read back from the optimizer
    constant = tmp_path / "constant"
    _train(_spec(epochs=5, momentum=0.9), constant)
    assert _history(constant)[2]["loss"] != _history(tmp_path / "whole")[2]["loss"]  # it changed the training
    _train(_spec(epochs=3, schedule=schedule, momentum=0.9), tmp_path / "split")
    _train(_spec(epochs=5, schedule=schedule, momentum=0.9), tmp_path / "split", resume=True)
    strip = lambda run: [{k: v for k, v in h.items() if k != "seconds"} for h in _history(run)]  # noqa: E731
    assert strip(tmp_path / "split") == strip(tmp_path / "whole")


# ----- early stopping ----------------------------------------------------------------------------

def test_early_stopping_restores_the_best_epoch(keras, tmp_path):
    # min_delta 0.5: no epoch after the first can "improve" val_accuracy by half a point of 1.0,
    # so training stops after 1 + patience epochs and the best epoch is the first.
    data = _spec(epochs=10, early_stopping={"monitor": "val_accuracy", "patience": 2, "min_delta": 0.5})
    run = tmp_path / "run"
    metrics = _train(data, run)
    history = _history(run)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert metrics["stopped_early"] is True and metrics["best_epoch"] == 1 and metrics["epochs"] == 3
    assert history[2]["val_accuracy"] != history[0]["val_accuracy"]
    for got, want in zip(_weights(run / "model.keras"), _weights(run / "checkpoints" / "epoch-0001.keras")):
        np.testing.assert_array_equal(got, want)
    assert metrics["test"]["accuracy"] == pytest.approx(history[0]["val_accuracy"], abs=1e-6)
    # the best epoch's checkpoint is kept beside the last two
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch-0001.keras", "epoch-0002.keras", "epoch-0003.keras"]
    # resuming a run that stopped early trains nothing more
    again = _train(data, run, resume=True)
    assert len(_history(run)) == 3 and again["best_epoch"] == 1


def test_a_trials_training_keeps_the_last_checkpoint_alone_and_the_best_weights_in_memory(keras, tmp_path):
    # checkpoints=False (a sweep's trials): the same model and metrics as with a checkpoint
    # per epoch; the best epoch's weights come from memory; the last epoch's checkpoint is
    # written, once, and a later --resume continues from it
    data = _spec(epochs=10, early_stopping={"monitor": "val_accuracy", "patience": 2, "min_delta": 0.5})
    every, last = _train(data, tmp_path / "every"), _train(data, tmp_path / "last", checkpoints=False)
    assert {k: v for k, v in last.items() if k != "wall_seconds" and "per_second" not in k} == {
        k: v for k, v in every.items() if k != "wall_seconds" and "per_second" not in k}
    assert last["best_epoch"] == 1 and last["epochs"] == 3
    for got, want in zip(_weights(tmp_path / "last" / "model.keras"), _weights(tmp_path / "every" / "model.keras")):
        np.testing.assert_array_equal(got, want)
    assert [p.name for p in (tmp_path / "last" / "checkpoints").iterdir()] == ["epoch-0003.keras"]
    for got, want in zip(_weights(tmp_path / "last" / "checkpoints" / "epoch-0003.keras"),
                         _weights(tmp_path / "every" / "checkpoints" / "epoch-0003.keras")):
        np.testing.assert_array_equal(got, want)
    assert [h["epoch"] for h in _history(tmp_path / "last")] == [1, 2, 3]
    more = _train({**data, "train": {**data["train"], "early_stopping": None, "epochs": 4}}, tmp_path / "last",
                  resume=True)
    assert more["epochs"] == 4 and [h["epoch"] for h in _history(tmp_path / "last")] == [1, 2, 3, 4]


def test_early_stopping_on_loss_keeps_going_while_it_improves(keras, tmp_path):
    data = _spec(epochs=4, early_stopping={"monitor": "loss", "patience": 1})
    metrics = _train(data, tmp_path / "run")
    assert metrics["epochs"] == 4 and metrics["stopped_early"] is False and metrics["best_epoch"] == 4


# ----- honest resume -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_three_epochs(keras, tmp_path_factory):
    run = tmp_path_factory.mktemp("template") / "digits-softmax"
    _train(_spec(epochs=3), run)
    return run


@pytest.fixture
def three_epochs(trained_three_epochs, tmp_path):
    """A copy of a run trained for 3 of its epochs."""
    import shutil

    run = tmp_path / "exports" / "digits-softmax"
    shutil.copytree(trained_three_epochs, run)
    return run


@pytest.mark.parametrize("change,keys", [
    (lambda d: d["model"].update(kind="mlp", hidden=[{"units": 16}]), ["model.kind", "model.hidden"]),
    (lambda d: d["model"].update(kernel_initializer="he_normal"), ["model.kernel_initializer"]),
    (lambda d: d["data"].update(limit=500), ["data.limit"]),
    (lambda d: d["data"].update(test_fraction=0.3), ["data.test_fraction"]),
    (lambda d: d["data"]["preprocessing"].update(standardize=True), ["data.preprocessing.standardize"]),
    (lambda d: d["train"].update(seed=1, optimizer="adam"), ["train.optimizer", "train.seed"]),
])
def test_resume_refuses_a_changed_model_or_dataset_naming_the_keys(three_epochs, change, keys):
    data = _spec(epochs=5)
    change(data)
    before = (three_epochs / "history.json").read_bytes(), (three_epochs / "spec.json").read_bytes()
    with pytest.raises(UsageError) as e:
        _train(data, three_epochs, resume=True)
    assert e.value.exit_code == 2
    message = str(e.value)
    assert "cannot --resume" in message and "train afresh" in message
    for key in keys:
        assert key in message
    named = message.split("cannot --resume: ")[1].split(" differ")[0]
    assert sorted(part.split(" (")[0] for part in named.split(", ") if " (" in part) == sorted(keys)
    assert ((three_epochs / "history.json").read_bytes(), (three_epochs / "spec.json").read_bytes()) == before


def test_resume_refusal_from_the_cli_exits_2_with_one_line(three_epochs, tmp_path):
    from click.testing import CliRunner

    from zoo.cli import main

    changed = _spec(epochs=4)
    changed["model"]["input_shape"] = [64]
    changed["data"]["dataset"] = "npz"
    changed["data"]["path"] = "x.npz"
    done = CliRunner().invoke(main, ["train", str(write_spec(tmp_path, changed, "changed.json")), "--resume",
                                     "--out", str(three_epochs.parent)])
    assert done.exit_code == 2, (done.output, done.exception)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in done.output
    for key in ("model.input_shape", "data.dataset", "data.path"):
        assert key in lines[0]


def test_changed_optimizer_settings_are_applied_and_recorded(keras, three_epochs, tmp_path):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(three_epochs, plain)
    _train(_spec(epochs=5), plain, resume=True)
    metrics = _train(_spec(epochs=5, momentum=0.9, learning_rate=0.05), three_epochs, resume=True)
    history = _history(three_epochs)
    assert history[3]["changed_on_resume"] == {"train.learning_rate": [0.1, 0.05], "train.momentum": [0.0, 0.9]}
    assert "changed_on_resume" not in history[4]
    assert [h["learning_rate"] for h in history] == pytest.approx([0.1] * 3 + [0.05] * 2)
    assert metrics["optimizer"]["momentum"] == pytest.approx(0.9)
    assert metrics["changes_on_resume"] == [{"after_epoch": 3, "changed": history[3]["changed_on_resume"]}]
    from zoo.stages.build import load_model as load_checkpoint

    opt = load_checkpoint(three_epochs / "checkpoints" / "epoch-0005.keras").optimizer
    assert opt.get_config()["momentum"] == pytest.approx(0.9)  # the optimizer that trained, saved with it
    assert int(np.asarray(opt.iterations)) == int(np.asarray(load_checkpoint(plain / "model.keras").optimizer.iterations))
    assert json.loads((three_epochs / "spec.json").read_text())["train"]["momentum"] == 0.9
    # and it changed the training: the weights differ from the unchanged resume's
    assert any(not np.allclose(a, b) for a, b in zip(_weights(three_epochs / "model.keras"), _weights(plain / "model.keras")))


def test_resume_with_a_new_batch_size_uses_it(keras, three_epochs):
    _train(_spec(epochs=4, batch_size=7), three_epochs, resume=True)
    assert _history(three_epochs)[3]["changed_on_resume"] == {"train.batch_size": [32, 7]}
    from zoo.stages.build import load_model as load_checkpoint

    # 1,438 training digits: 45 steps an epoch at 32, 206 at 7
    assert int(np.asarray(load_checkpoint(three_epochs / "model.keras").optimizer.iterations)) == 3 * 45 + 206


# ----- the compiled epoch loop against model.fit ----------------------------------------------

def test_compiled_epochs_match_model_fit(keras, tmp_path):
    a = _train(_spec("digits-mlp", epochs=3), tmp_path / "compiled")
    b = _train(_spec("digits-mlp", epochs=3), tmp_path / "fit", compiled=False)
    assert (a["trainer"], b["trainer"]) == ("CompiledEpochs", "FitEpochs")
    for x, y in zip(_history(tmp_path / "compiled"), _history(tmp_path / "fit")):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-5), key
    for got, want in zip(_weights(tmp_path / "compiled" / "model.keras"), _weights(tmp_path / "fit" / "model.keras")):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ----- the Python API -------------------------------------------------------------------------------

def test_import_zoo_is_cheap():
    code = ("import sys, zoo; zoo.load_spec; zoo.run; spec = zoo.load_spec({!r}); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'onnxruntime', 'tf2onnx') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code.format(str(ROOT / "specs" / "digits-softmax.json"))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_api_round_trip(keras, tmp_path):
    import zoo

    out = tmp_path / "exports"
    data = _spec(epochs=2)
    spec = zoo.load_spec(data)
    assert zoo.load_spec(spec) is spec and zoo.load_spec(ROOT / "specs" / "digits-softmax.json").train.epochs == 20
    built = zoo.build(data, out=out)
    assert built.run == out / "digits-softmax" and (built.run / "model.keras").is_file()
    assert [r["name"] for r in built.summary][-1] == "logits"
    lines = []
    metrics = zoo.train(spec, out=out, log=lines.append)
    assert metrics["epochs"] == 2 and metrics["test"]["accuracy"] > 0.5 and lines
    more = zoo.train(built.run, out=out, resume=True, epochs=3)  # a run folder; an override
    assert more["epochs"] == 3
    report = zoo.export(spec, out=out)
    assert report["status"] == "passed" and (built.run / "model.onnx").is_file()
    assert zoo.verify(built.run / "model.onnx")["status"] == "passed"
    from zoo.stages.data import load_dataset

    x = load_dataset(spec).x_test[:4]
    np.save(tmp_path / "x.npy", x)
    predictions = zoo.predict(spec, tmp_path / "x.npy", out=out, top_k=2)
    assert len(predictions) == 4 and len(predictions[0]["top"]) == 2
    assert predictions == zoo.predict(built.run / "model.onnx", tmp_path / "x.npy", top_k=2)
    done = zoo.run(_spec(epochs=1), out=tmp_path / "again", learning_rate=0.05)
    assert done["verify"]["status"] == "passed"
    assert json.loads((done["run"] / "spec.json").read_text())["train"]["learning_rate"] == 0.05


def test_api_raises_zoos_errors(tmp_path):
    import zoo

    with pytest.raises(SpecError) as e:
        zoo.load_spec({"version": 1, "name": "x"})
    assert e.value.exit_code == 2 and "model" in str(e.value)
    with pytest.raises(UsageError):
        zoo.load_spec(42)
    with pytest.raises(SpecError):
        zoo.load_spec(tmp_path / "missing.json")
    with pytest.raises(UsageError, match="unknown option"):
        zoo.run(_spec(), out=tmp_path, epoch=3)
    with pytest.raises(UsageError):
        zoo.export(tmp_path / "no-such-run", out=tmp_path)


def test_the_package_face_is_the_api_and_the_stages_live_apart():
    import types

    import zoo
    from zoo import api
    from zoo.stages.train import train_run

    assert zoo.train is api.train and zoo.build is api.build and zoo.verify is api.verify
    assert type(zoo) is types.ModuleType  # no module-class swap: zoo.train is a plain function
    assert callable(train_run) and train_run is not zoo.train


# ----- plots ----------------------------------------------------------------------------------------

def test_curves_label_the_y_axis_and_tick_whole_epochs():
    from zoo.stages import plots

    spec = validate(_spec())
    history = [{"epoch": e, "loss": 1 / e, "accuracy": 0.5 + e / 20, "val_accuracy": 0.5 + e / 21} for e in (1, 2, 3)]
    fig = plots.curves_figure(history, spec)
    ax = fig.axes[0]
    assert ax.get_ylabel() == plots.Y_LABEL_CLASSIFIER and ax.get_xlabel() == "epoch"
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"train loss", "train acc", "test acc"}
    linear = validate(spec_dict("linear-synthetic"))
    assert plots.curves_figure([{"epoch": 1, "loss": 0.1, "val_loss": 0.2}], linear).axes[0].get_ylabel() == \
        plots.Y_LABEL_REGRESSION
    # early stopping: the best epoch, whose weights the model kept, is marked
    marked = plots.curves_figure(history, spec, best_epoch=2).axes[0]
    assert plots.best_label(2) in {t.get_text() for t in marked.get_legend().get_texts()}
    assert any(list(line.get_xdata()) == [2, 2] for line in marked.get_lines())


def test_predictions_say_which_line_is_the_truth():
    from zoo.stages import plots

    images = np.zeros((4, 8, 8), "float32")
    fig = plots.predictions_figure(images, np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4]), None)
    assert "true label (top line)" in fig._suptitle.get_text() and "predicted label (bottom line" in fig._suptitle.get_text()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[2] == "true: 3\npred: 0" and titles[0] == "true: 1\npred: 1"
    assert [ax.title.get_color() for ax in fig.axes[:4]] == ["black", "black", "red", "black"]


# ----- onnxruntime's CUDA provider only when it really runs ----------------------------------

def test_providers_fall_back_to_the_cpu_quietly_without_a_driver(capsys):
    import ctypes

    from zoo.core.runtime import providers

    try:
        ctypes.CDLL("libcuda.so.1")
        pytest.skip("a CUDA driver is installed here: providers() would probe the GPU")
    except OSError:
        pass
    assert providers() == ["CPUExecutionProvider"]
    assert providers() is not providers()  # a copy each time: callers may not change the decision
    assert capsys.readouterr() == ("", "")


def test_the_torch_backend_trains_through_model_fit_in_the_same_order(zoo, tmp_path):
    pytest.importorskip("torch", reason="torch is not installed; `pip install torch` runs this on Keras's torch backend")
    spec = write_spec(tmp_path, _spec(epochs=2))
    done = zoo("train", spec, "--backend", "torch", "--quiet")
    assert done.returncode == 0, done.stderr
    run = tmp_path / "exports" / "digits-softmax"
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["backend"], metrics["trainer"], metrics["epochs"]) == ("torch", "FitEpochs", 2)
    assert metrics["test"]["accuracy"] > 0.6
    done = zoo("train", run, "--backend", "torch", "--resume", "--epochs", "3", "--learning-rate", "0.05", "--quiet")
    assert done.returncode == 0, done.stderr
    history = _history(run)
    assert [h["learning_rate"] for h in history] == pytest.approx([0.1, 0.1, 0.05])
    assert history[2]["changed_on_resume"] == {"train.learning_rate": [0.1, 0.05]}
