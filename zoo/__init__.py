"""zoo: turn a short JSON spec into a trained, exported, verified model.

The package's face: the API of zoo/api.py, re-exported.

    import zoo

    spec = zoo.load_spec("specs/digits-softmax.json")
    metrics = zoo.train(spec, epochs=3)
    report = zoo.export(spec)

Layers, each importing only those below it (the test suite holds them, see pyproject.toml):
cli -> sweep -> api -> deploy -> stages -> spec -> core. Importing zoo is cheap: Keras and
TensorFlow load only in the calls that need them.
"""

from zoo.api import Built, build, export, load_spec, predict, run, train, verify
from zoo.core.version import __version__

__all__ = ["Built", "build", "export", "load_spec", "predict", "run", "train", "verify", "__version__"]
