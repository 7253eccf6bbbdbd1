"""Spec -> keras.Model.

Preprocessing lives inside the model (cast, rescale, flatten, standardize), so the
model and its ONNX export take the dataset's raw examples. Model code uses Keras 3
ops only, so the same model runs on the tensorflow, jax and torch backends.

Layer names are stable: `input`, `rescale`, `flatten`, `standardize`, `hidden_1`,
`leaky_relu_1` (leaky_relu only), `dropout_1`, ..., and `logits` (classifiers) or `predictions` (linear).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import ops

from zoo.core.contract import LOGITS, MODEL_KERAS, PREDICTIONS, SPEC_FILE
from zoo.core.errors import UsageError
from zoo.spec import Spec


@keras.saving.register_keras_serializable(package="zoo")
class Standardize(keras.layers.Layer):
    """(x - mean) / std per feature, with mean and std fitted by `adapt`.

    Keras's Normalization layer keeps its statistics in tensors computed outside its
    variables, which tf2onnx then sees as extra graph inputs; here they are plain
    non-trainable weights, so they are saved, restored and exported as constants.
    """

    def build(self, input_shape):
        features = (input_shape[-1],)
        self.mean = self.add_weight(shape=features, initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=features, initializer="ones", trainable=False, name="std")

    def adapt(self, x):
        """Fit mean and std to `x`, an array of shape (examples, features)."""
        x = np.asarray(x, dtype="float64")
        std = x.std(axis=0)
        self.mean.assign(x.mean(axis=0).astype("float32"))
        # constant features (MNIST's border pixels) would divide by zero: leave them unscaled
        self.std.assign(np.where(std < 1e-7, 1.0, std).astype("float32"))

    def call(self, x):
        return (x - self.mean) / self.std


DEFAULT_NEGATIVE_SLOPE = 0.01  # PyTorch's nn.LeakyReLU default, which the seeds use


def kernel_initializer(spec: Spec):
    """The Keras initializer for every Dense kernel of the spec's model.

    he_normal is PyTorch's `kaiming_normal_` (fan_in, gain sqrt(2)): N(0, 2 / fan_in),
    untruncated. Keras's own "he_normal" draws from a truncated normal, so it is not used.
    random_normal is N(0, stddev^2), d2l's `normal(0, 0.01)`.
    """
    init = spec.model.kernel_initializer
    if init == "glorot_uniform":
        return keras.initializers.GlorotUniform()
    if init == "he_normal":
        return keras.initializers.VarianceScaling(scale=2.0, mode="fan_in", distribution="untruncated_normal")
    stddev = 0.01 if init == "random_normal" else init.stddev
    return keras.initializers.RandomNormal(mean=0.0, stddev=stddev)


def build_model(spec: Spec, input_shape=None) -> keras.Model:
    """Build the (untrained) Keras model a spec describes. The spec's seed fixes the weights.

    `input_shape`: a table's encoded width, [features] (its spec has none: it comes from the data)."""
    keras.utils.set_random_seed(spec.train.seed)
    m, pre = spec.model, spec.data.preprocessing
    shape = tuple(input_shape or m.input_shape)

    x = inputs = keras.Input(shape=shape, dtype=m.input_dtype, name="input")
    if pre.rescale is not None or pre.offset:
        x = keras.layers.Rescaling(pre.rescale if pre.rescale is not None else 1.0, pre.offset, name="rescale")(x)
    elif m.input_dtype != "float32":
        x = keras.layers.Rescaling(1.0, name="cast")(x)  # uint8 -> float32; Dense needs floats
    if len(shape) > 1:
        x = keras.layers.Flatten(name="flatten")(x)
    if pre.standardize:
        x = Standardize(name="standardize")(x)
    for i, layer in enumerate(m.hidden, start=1):
        leaky = layer.activation == "leaky_relu"
        x = keras.layers.Dense(layer.units, activation=None if leaky else layer.activation, use_bias=m.use_bias,
                               kernel_initializer=kernel_initializer(spec), name=f"hidden_{i}")(x)
        if leaky:  # a layer of its own: Dense's "leaky_relu" would fix the slope at Keras's 0.2
            slope = DEFAULT_NEGATIVE_SLOPE if layer.negative_slope is None else layer.negative_slope
            x = keras.layers.LeakyReLU(negative_slope=slope, name=f"leaky_relu_{i}")(x)
        if layer.dropout:
            x = keras.layers.Dropout(layer.dropout, seed=spec.train.seed + i, name=f"dropout_{i}")(x)
    # No activation on the output: classifiers emit logits (the softmax belongs to the
    # loss, from_logits=True, and to the exported graph's `probabilities` output).
    out_name = LOGITS if spec.is_classifier else PREDICTIONS
    outputs = keras.layers.Dense(spec.num_outputs, use_bias=m.use_bias, kernel_initializer=kernel_initializer(spec),
                                 name=out_name)(x)
    return keras.Model(inputs, outputs, name=spec.name.replace("-", "_"))


def adapt(model: keras.Model, x_train) -> None:
    """Fit data-dependent preprocessing (standardize) to the raw training examples."""
    try:
        layer = model.get_layer("standardize")
    except ValueError:
        return
    upstream = keras.Model(model.input, layer.input)
    layer.adapt(ops.convert_to_numpy(upstream.predict(x_train, batch_size=4096, verbose=0)))


def summarize(model: keras.Model) -> list[dict]:
    """One row per layer: name, type, output shape, parameter count."""
    rows = []
    for layer in model.layers:
        shape = layer.output.shape if hasattr(layer, "output") else None
        rows.append({
            "name": layer.name,
            "type": type(layer).__name__,
            "output_shape": [None if d is None else int(d) for d in shape] if shape is not None else None,
            "params": int(layer.count_params()),
        })
    return rows


def build_run(spec: Spec, run) -> keras.Model:
    """Write a run folder for a spec: the resolved spec.json and the untrained model.keras.

    Rebuilding replaces the run: the earlier training's artefacts, and all made from
    them, are removed. Call with the run locked (runs.locked).
    """
    from zoo.core import provenance, runs
    from zoo.spec import dumps

    width = None
    if spec.is_table:  # the width of the encoded columns: read from the data (ZOO_DATA_DIR)
        from zoo.stages.data import load_dataset

        width = load_dataset(spec).x_train.shape[1:]
    model = build_model(spec, width)
    runs.start_over(run)
    provenance.save_text(run, SPEC_FILE, dumps(spec), "build")
    with provenance.artefact(run, MODEL_KERAS, "build", inputs=[SPEC_FILE]) as tmp:
        model.save(tmp)
    return model


def load_model(path):
    """Load a .keras file with safe_mode on: a file carrying code (a Lambda) is refused."""
    import keras

    if not Path(path).is_file():  # Keras says "File not found" inside a ValueError: say it plainly
        raise UsageError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "safe_mode" in str(e) or "lambda" in str(e).lower():
            raise UsageError(f"{path}: refused: the model file carries Python code (a Lambda layer); "
                             f"zoo loads model files with safe_mode on") from None
        raise UsageError(f"{path}: not a loadable Keras model ({msg[:200]})") from None
