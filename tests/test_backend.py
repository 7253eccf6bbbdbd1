"""zoo.core.backend: a process that is zoo's own loads Keras without the extras zoo never uses;
a program that imports zoo as a library gets Keras whole."""

import subprocess
import sys

PROBE = """
import sys
from zoo.core import backend
if sys.argv[1] == "own":
    backend.own_process()
backend.import_keras()
loaded = [m for m in ("sklearn", "matplotlib.pyplot") if m in sys.modules]
from zoo.stages.data import digits_arrays
x, y = digits_arrays()  # the digits come without scikit-learn's import too
after_digits = "sklearn" in sys.modules
import matplotlib.pyplot, sklearn.datasets  # both import as usual afterwards
from keras.src.wrappers import fixes
print(loaded, after_digits, fixes.sklearn is not None, x.shape)
"""


def _probe(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_zoos_own_process_loads_keras_without_scikit_learn_and_pyplot():
    assert _probe("own") == "[] False False (1797, 8, 8)"


def test_a_library_import_gets_keras_whole():
    assert _probe("library") == "['sklearn', 'matplotlib.pyplot'] True True (1797, 8, 8)"
