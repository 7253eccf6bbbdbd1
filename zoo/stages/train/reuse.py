"""One compiled model and its traced epoch function, reused across the trainings of one process.

A sweep's worker trains one architecture many times, changing only the learning rate, the
seed (and with it, for some datasets, the train/test split) or the batch size. Tracing the
epoch's tf.function (0.2-0.6 s) and mirroring the model for the checkpoint writer cost more
than a small model's 3 epochs. After `keep_traced()`, a fresh training whose model and
optimizer (all but its learning rate) are those of a kept one trains the kept model instead:

- the fresh model is still built from the spec and seed, and every variable of it (weights,
  adapted statistics, dropout seed states) is assigned to the kept model's;
- the optimizer's variables are assigned from a new optimizer made from the spec (learning
  rate, iterations and slots as a fresh one has them), and the model is compiled again
  with it, so the saved model.keras records the spec's compile settings;
- the kept model takes the fresh one's name;
- the runner is handed this training's arrays, where they are other arrays.

The traced function takes the data, the epoch's order and the batch size as arguments and
reads the learning rate from its variable, so one graph trains every training of the
architecture whose arrays have the same shapes (others get a trace of their own), and a
trial's metrics are those of a `zoo run` of its spec (tests/test_sweep_speed.py checks
that). Off by default: `zoo train` and `zoo run` build, trace and mirror afresh.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

from zoo.spec import Spec
from zoo.stages.train.loop import CompiledEpochs, epoch_runner
from zoo.stages.train.recipe import compile_model, make_optimizer

KEPT = 4  # architectures a process keeps traced (a sweep over more retraces the least recent)
_kept: OrderedDict | None = None


def keep_traced(on: bool = True) -> None:
    """From now on, trainings of a kept model's architecture on the same arrays reuse it (or stop doing so)."""
    global _kept
    _kept = OrderedDict() if on else None


@dataclass
class Kept:
    model: object  # the compiled keras.Model the runner's traced function trains
    runner: CompiledEpochs
    arrays: tuple  # (x_train, y_train, x_val, y_val): the arrays the runner holds as tensors now
    mirror: tuple | None = None  # the checkpoint writer's (shadow, variable pairs), made at its first use


def _key(spec: Spec, model) -> str:
    """What the traced graph depends on: the model's layers and the optimizer's settings but
    the learning rate (a variable), the task and the backend."""
    import keras

    config = dict(model.get_config())
    config.pop("name", None)
    optimizer = {k: v for k, v in model.optimizer.get_config().items() if k not in ("name", "learning_rate")}
    return json.dumps([config, type(model.optimizer).__name__, optimizer, spec.is_classifier,
                       keras.backend.backend()], sort_keys=True, default=str)


def _arrays(x_train, y_train, validation) -> tuple:
    return (x_train, y_train, *(validation or (None, None)))


def runner_for(model, spec: Spec, x_train, y_train, validation, steps: int, compiled=None):
    """(model, runner) to train a freshly built, compiled `model`: a kept model set to the fresh
    one's initial state and its traced runner, where one fits; else `model` and a new runner
    (kept for the next training when keeping is on)."""
    runner = None
    if _kept is not None and compiled is not False:
        key, arrays = _key(spec, model), _arrays(x_train, y_train, validation)
        kept = _kept.get(key)
        if kept is not None and (kept.arrays[2] is None) == (validation is None):
            _kept.move_to_end(key)
            if not all(a is b for a, b in zip(kept.arrays, arrays)):  # another seed's split, say
                kept.runner.use(x_train, y_train, validation)
                kept.arrays = arrays
            _take_state(kept.model, model, spec, steps)
            return kept.model, kept.runner
        runner = epoch_runner(model, spec, x_train, y_train, compiled, validation)
        if isinstance(runner, CompiledEpochs):
            _kept[key] = Kept(model, runner, arrays)
            _kept.move_to_end(key)
            while len(_kept) > KEPT:
                _kept.popitem(last=False)
    return model, runner or epoch_runner(model, spec, x_train, y_train, compiled, validation)


def _take_state(kept, fresh, spec: Spec, steps: int) -> None:
    """Give the kept model the fresh model's name, variables and a fresh optimizer's state."""
    from zoo.core.errors import TrainingError

    pairs = list(zip(kept.variables, fresh.variables))
    optimizer = make_optimizer(spec.train)
    optimizer.build(kept.trainable_variables)
    pairs += zip(kept.optimizer.variables, optimizer.variables)
    if (len(kept.variables) != len(fresh.variables) or len(kept.optimizer.variables) != len(optimizer.variables)
            or any(tuple(a.shape) != tuple(b.shape) for a, b in pairs)):
        raise TrainingError("internal: a kept model does not match the fresh one")  # the key says they match
    for target, source in pairs:
        target.assign(source)
    kept.name = fresh.name
    compile_model(kept, spec, steps, optimizer=kept.optimizer)


def mirror_for(model, make):
    """The checkpoint writer's mirror of `model`: the kept one (renamed) for a kept model, else `make()`."""
    kept = next((k for k in (_kept or {}).values() if k.model is model), None)
    if kept is None:
        return make()
    if kept.mirror is None:
        kept.mirror = make()
    kept.mirror[0].name = model.name
    return kept.mirror
