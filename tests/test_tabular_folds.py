"""Cross-validation and --resume on a table spec (penguins): a run interrupted by a real SIGTERM,
after the folds or during them, resumes to the metrics.json of an uninterrupted run."""

import json
import signal

import pytest
from conftest import spec_dict

from zoo.core import signals
from zoo.core.errors import Interrupted, ProvenanceError

EPOCHS = 6


@pytest.fixture(scope="module", autouse=True)
def needs_penguins():
    import importlib.util

    if importlib.util.find_spec("palmerpenguins") is None:
        pytest.skip("needs palmerpenguins (a dependency in pyproject.toml): pip install -e .")


@pytest.fixture
def sigterm_raises():
    """SIGTERM handled as the CLI handles it: Interrupted, unwinding through every finally."""
    before = {s: signal.getsignal(s) for s in signals.SIGNALS}
    signals.install()
    yield
    for s, h in before.items():
        signal.signal(s, h)


def _train(out, log=None, resume=False, **train):
    import zoo

    spec = spec_dict("penguins-softmax")
    spec["train"].update({"folds": 3, "epochs": EPOCHS, **train})
    return zoo.train(spec, out=out, resume=resume, log=log or (lambda line: None))


def _sigterm_on(prefix, seen):
    """A log that keeps every line and sends this process SIGTERM when one starts with `prefix`."""
    def log(line):
        seen.append(line)
        if line.startswith(prefix):
            signal.raise_signal(signal.SIGTERM)
    return log


def _history(run):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in json.loads((run / "history.json").read_text())]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    return _train(out), out / "penguins-softmax"


def test_resume_after_the_folds_keeps_their_figures(whole, tmp_path, sigterm_raises):
    metrics, run = whole
    seen = []
    with pytest.raises(Interrupted):
        _train(tmp_path, log=_sigterm_on("epoch 2/", seen))
    assert [line.split(":")[0] for line in seen if line.startswith("fold ")] == ["fold 1/3", "fold 2/3", "fold 3/3"]
    assert not (tmp_path / "penguins-softmax" / "metrics.json").exists()
    lines = []
    resumed = _train(tmp_path, log=lines.append, resume=True)
    assert resumed["cv"] == metrics["cv"]  # the figures of the folds trained before the signal
    assert set(resumed) == set(metrics) and resumed["epochs"] == EPOCHS
    assert not [line for line in lines if line.startswith("fold ")]  # kept, not trained again
    assert any("3-fold cross-validation (kept from before the interruption" in line for line in lines)
    assert _history(tmp_path / "penguins-softmax") == _history(run)
    on_disk = json.loads((tmp_path / "penguins-softmax" / "metrics.json").read_text())
    assert on_disk["cv"] == metrics["cv"]

    # the record is provenance-covered: edited by hand, it is named, not trusted
    cv_file = tmp_path / "penguins-softmax" / "cv.json"
    edited = json.loads(cv_file.read_text())
    edited["mean"]["accuracy"] = 1.0
    cv_file.write_text(json.dumps(edited))
    with pytest.raises(ProvenanceError, match="cv.json: changed since"):
        _train(tmp_path, resume=True)


def test_resume_after_an_interrupted_fold_cross_validates_again(whole, tmp_path, sigterm_raises):
    metrics, _ = whole
    seen = []
    with pytest.raises(Interrupted):
        _train(tmp_path, log=_sigterm_on("fold 2/", seen))
    assert not (tmp_path / "penguins-softmax" / "cv.json").exists()  # recorded only once every fold finished
    lines = []
    resumed = _train(tmp_path, log=lines.append, resume=True)
    assert [line.split(":")[0] for line in lines if line.startswith("fold ")] == ["fold 1/3", "fold 2/3", "fold 3/3"]
    assert resumed["cv"] == metrics["cv"] and set(resumed) == set(metrics)


def test_resume_with_more_epochs_cross_validates_with_them(whole, tmp_path):
    metrics, _ = whole
    shorter = _train(tmp_path, epochs=EPOCHS - 2)
    assert shorter["cv"] != metrics["cv"]
    lines = []
    resumed = _train(tmp_path, log=lines.append, resume=True)  # train.epochs EPOCHS - 2 -> EPOCHS
    assert any(line.startswith("cross-validating again: cv.json holds no finished folds") for line in lines)
    assert resumed["cv"] == metrics["cv"]  # the folds of an uninterrupted run with EPOCHS epochs
