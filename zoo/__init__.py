"""zoo: turn a short JSON spec into a trained, exported, verified model.

Stages, one module each: spec (load + validate), data, build (spec -> keras.Model),
train, export (-> ONNX), verify (ONNX vs Keras), predict, cli. `zoo.api` gathers them
as functions, reachable here: zoo.load_spec, zoo.build, zoo.train, zoo.export,
zoo.verify, zoo.predict, zoo.run (see zoo/api.py).

Importing zoo is cheap: the API loads on first use, and Keras and TensorFlow only in
the stages that need them.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

_API = ("load_spec", "build", "train", "export", "verify", "predict", "run")
# Five API functions share their names with the stage modules (zoo/train.py, ...), and
# Python's import system sets `zoo.train` to the module whenever zoo.train is imported.
# So those modules are made callable: `zoo.train(spec)` calls zoo.api.train, while
# `from zoo.train import train` and `zoo.train.CompiledEpochs` keep working.
_STAGES = ("build", "train", "export", "verify", "predict")
__all__ = [*_API, "__version__"]


class _Stage(types.ModuleType):
    """A stage module that, called, runs the API function of its name."""

    def __call__(self, *args, **kwargs):
        from . import api

        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name in _STAGES and isinstance(value, types.ModuleType) and type(value) is types.ModuleType:
            value.__class__ = _Stage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    if name in _STAGES:  # the stage module (made callable as it is set on the package)
        return importlib.import_module(f"{__name__}.{name}")
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_API})
