"""The newcomer's path (issue 20): what a first user meets, said plainly, each stumble held by a test."""

import json
import os

import numpy as np
import pytest
from conftest import SPECS, write_spec

from zoo.stages.data import FASHION_FILES

pytestmark = pytest.mark.slow


def test_zoo_run_says_what_it_made_in_order_and_what_to_do_next_and_retraining_says_what_it_replaces(zoo, tmp_path):
    done = zoo("run", SPECS / "linear-synthetic.json", "--epochs", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    trained = next(i for i, line in enumerate(lines) if line.startswith("wrote ") and "history.json" in line)
    exported = next(i for i, line in enumerate(lines) if "model.onnx (" in line)
    assert trained < exported, done.stdout  # the training's summary comes before the export's lines
    made = next(i for i, line in enumerate(lines) if line.startswith("made "))
    assert "card.md" in lines[made] and made > exported
    assert "zoo predict exports/linear-synthetic/model.onnx exports/linear-synthetic/test_data_set_0/input_0.pb" in done.stdout
    assert "zoo web exports/linear-synthetic" in done.stdout and "zoo serve exports/linear-synthetic" in done.stdout

    run = tmp_path / "exports" / "linear-synthetic"
    again = zoo("train", run, "--epochs", "1")
    assert again.returncode == 0, again.stderr
    said = [line for line in again.stdout.splitlines() if "set aside" in line]
    assert len(said) == 1, again.stdout
    for name in ("model.onnx", "card.md", "verify.json", "test_data_set_0/"):
        assert name in said[0]
    assert "the earlier model's" in said[0] and "put back if it fails" in said[0]
    # the training completed: what was set aside is gone for good
    assert not (run / "model.onnx").exists() and not (run / ".replaced").exists()


def test_a_run_remembers_its_data_folder_for_export_and_verify(zoo, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.savez(data / "tiny.npz", x_train=rng.normal(size=(64, 3)).astype("float32"), y_train=rng.integers(0, 2, 64),
             x_test=rng.normal(size=(16, 3)).astype("float32"), y_test=rng.integers(0, 2, 16))
    spec = {"version": 1, "name": "tiny", "model": {"kind": "softmax", "input_shape": [3], "num_classes": 2},
            "data": {"dataset": "npz", "path": "tiny.npz"}, "train": {"epochs": 1, "batch_size": 16}}
    done = zoo("train", write_spec(tmp_path, spec), env={"ZOO_DATA_DIR": str(data)})
    assert done.returncode == 0, done.stderr
    run = tmp_path / "exports" / "tiny"
    assert json.loads((run / "metrics.json").read_text())["data_dir"] == str(data)
    env = {k: v for k, v in os.environ.items() if k != "ZOO_DATA_DIR"}
    unset = {"ZOO_DATA_DIR": ""}  # a new shell: ZOO_DATA_DIR unset (empty counts as unset)
    for command in (["export", run, "--onnx"], ["verify", run]):
        done = zoo(*command, env={**env, **unset})
        assert done.returncode == 0, (command, done.stderr)


def test_missing_data_names_the_cause_and_the_files_and_leaves_no_empty_folder(zoo, tmp_path):
    empty, keras_home = tmp_path / "nothing-here", tmp_path / "keras-home"
    empty.mkdir()
    offline = {"ZOO_DATA_DIR": str(empty), "KERAS_HOME": str(keras_home),
               "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}  # a closed port: no network
    done = zoo("train", SPECS / "fashion-mnist-softmax.json", env=offline)
    assert done.returncode == 3, done.stderr
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("Error: fashion_mnist: "), done.stderr
    assert "no network connection" in error[0] and str(empty / "fashion-mnist") in error[0]
    for name in FASHION_FILES:
        assert name in error[0]
    assert not (keras_home / "datasets" / "fashion-mnist").exists()


def test_predict_reports_every_resize_and_rescale_of_an_image_and_the_card_says_what_an_image_must_be(zoo, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    done = zoo("run", SPECS / "digits-softmax.json", "--epochs", "20", "--quiet")
    assert done.returncode == 0, done.stderr
    run = tmp_path / "exports" / "digits-softmax"
    assert "rescaled to 0–16, the range of `digits`" in (run / "card.md").read_text()

    noise = tmp_path / "noise.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 100, 3), dtype=np.uint8)).save(noise)
    done = zoo("predict", run / "model.onnx", noise)
    assert done.returncode == 0 and f"{noise}: resized 100×50 to the model's 8×8 (bilinear)" in done.stderr, done.stderr

    # real digits saved as 0-255 PNGs: rescaled to the 0-16 the model was trained on, and said so
    digits = load_digits()
    right = 0
    for i in range(20):
        png = tmp_path / f"digit-{i}.png"
        Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8)).save(png)
        done = zoo("predict", run / "model.onnx", png, "--json")
        assert done.returncode == 0 and "rescaled pixel values 0–255 to 0–16" in done.stderr, done.stderr
        assert "resized" not in done.stderr
        right += json.loads(done.stdout)[0]["top"][0]["class"] == digits.target[i]
    assert right >= 17, right  # the model's test accuracy is about 0.95; unscaled it was far below

    done = zoo("predict", run / "model.keras", noise)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: {run / 'model.keras'}: predict runs the exported ONNX model with onnxruntime; give "
        f"{run / 'model.onnx'} (or the run folder), after `zoo export {run}`"]
