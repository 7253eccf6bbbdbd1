"""The run's training files, and committing an epoch.

Durability: after each epoch the checkpoint `checkpoints/epoch-NNNN.keras` is written
(atomically), then `history.json`, which commits the epoch, then older checkpoints are
pruned. On TensorFlow the EpochWriter does this on a thread, from a snapshot of the
model, while the next epoch trains; the run waits for it before it ends, however it ends.
Every file is recorded in the run's provenance.json.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from zoo.core import provenance, signals
from zoo.core.contract import CHECKPOINTS, HISTORY_FILE, METRICS_FILE, MODEL_KERAS, checkpoint_name
from zoo.core.errors import TrainingError
from zoo.spec import Spec
from zoo.stages.train.recipe import compile_model

KEEP_CHECKPOINTS = 2

# ----- the run's files: one helper each ---------------------------------------------------------

# Each is recorded in the run's provenance.json; `made_from` holds the digests of the
# spec and the data ({"@spec": ..., "@data": ...}) that the training files come from.

def write_model(run: Path, model, made_from: dict) -> Path:
    """model.keras: the trained model (atomic). Removes everything made from an older one."""
    _seed_keras_saving_cache()
    with provenance.artefact(run, MODEL_KERAS, "train", extra=made_from) as tmp:
        model.save(tmp)
    return run / MODEL_KERAS


def write_history(run: Path, history, made_from: dict) -> Path:
    """history.json: one record per completed epoch; writing it commits the epoch."""
    provenance.save_json(run, HISTORY_FILE, history, "train", extra=made_from)
    return run / HISTORY_FILE


def write_metrics(run: Path, metrics: dict) -> Path:
    """metrics.json: the test metrics of model.keras, and how they were made."""
    provenance.save_json(run, METRICS_FILE, metrics, "train", inputs=[MODEL_KERAS])
    return run / METRICS_FILE


def checkpoint_path(run: Path, epoch: int) -> Path:
    return run / checkpoint_name(epoch)


def write_checkpoint(run: Path, model, epoch: int, made_from: dict) -> None:
    """checkpoints/epoch-NNNN.keras: the model and optimizer state after `epoch` (atomic)."""
    _seed_keras_saving_cache()
    with provenance.artefact(run, checkpoint_name(epoch), "train", extra=made_from) as tmp:
        model.save(tmp)


def commit_epoch(run: Path, model, epoch: int, history: list, made_from: dict, keep=()) -> None:
    """The checkpoint of `epoch`, then history.json (which commits it), then pruning."""
    write_checkpoint(run, model, epoch, made_from)
    write_history(run, history, made_from)
    prune_checkpoints(run, keep=keep)


def prune_checkpoints(run: Path, keep=()) -> None:
    """Keep the last KEEP_CHECKPOINTS checkpoints and those of the epochs in `keep`."""
    kept = {checkpoint_path(run, e).name for e in keep}
    for old in sorted((run / CHECKPOINTS).glob("epoch-*.keras"))[:-KEEP_CHECKPOINTS]:
        if old.name not in kept:
            provenance.invalidate(run, f"{CHECKPOINTS}/{old.name}")


def mirror(model, spec: Spec, steps) -> tuple:
    """(shadow, pairs): a clone of the model and its optimizer, and the (live, copy) pairs of their variables."""
    import keras

    opt = model.optimizer
    shadow = keras.models.clone_model(model)
    compile_model(shadow, spec, steps, optimizer=type(opt).from_config(opt.get_config()))
    shadow.optimizer.build(shadow.trainable_variables)
    live = [*model.variables, *opt.variables]
    copy = [*shadow.variables, *shadow.optimizer.variables]
    if len(live) != len(copy) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(live, copy)):
        raise TrainingError("internal: the checkpoint snapshot does not mirror the model")  # never seen
    return shadow, list(zip(live, copy))


class EpochWriter:
    """Commits epochs on a background thread while the next epoch trains.

    model.save is ~15 ms of Python walking Keras's object graph, per epoch; TensorFlow
    releases the GIL while an epoch's graph runs, so the write overlaps the next epoch.
    What is saved is a snapshot: a clone of the model and its optimizer whose variables
    are assigned from the live ones when the epoch ends. The order is the synchronous
    one: checkpoint, then history.json (which commits the epoch), then pruning; commit()
    first waits for the previous epoch's, and close() (in a finally) waits for the last,
    so an interrupted or diverged run leaves every finished epoch committed and no
    temporary file. A failure in the writer is raised in the training thread.
    """

    def __init__(self, mirrored: tuple, run: Path, made_from: dict):
        self.shadow, self.pairs = mirrored
        self.run, self.made_from = run, made_from
        self.thread, self.error = None, None

    @staticmethod
    def make(model, spec: Spec, steps, run: Path, made_from: dict, kept=None):
        """An EpochWriter, or None where the model cannot be mirrored (then commit synchronously).
        `kept(model, make)` may give a mirror kept from an earlier training (zoo.stages.train.reuse)."""
        try:
            make = lambda: mirror(model, spec, steps)  # noqa: E731
            return EpochWriter(kept(model, make) if kept else make(), run, made_from)
        except Exception:
            return None

    def commit(self, epoch: int, history: list, keep=()) -> None:
        import threading

        # Ctrl-C / SIGTERM are held until the writer is started and recorded: an interrupt
        # raised inside Thread.start() would leave a thread that close() cannot join (and a
        # half-assigned snapshot).
        with signals.held():
            self.wait()
            for live, copy in self.pairs:
                copy.assign(live)
            thread = threading.Thread(target=self._write, args=(epoch, list(history), tuple(keep)),
                                      name=f"zoo-checkpoint-{epoch}")  # not a daemon: exit waits for it
            thread.start()
            self.thread = thread

    def _write(self, epoch, history, keep):
        try:
            _lower_this_threads_priority()
            commit_epoch(self.run, self.shadow, epoch, history, self.made_from, keep)
        except BaseException as e:  # raised in the training thread by wait()
            self.error = e

    def wait(self) -> None:
        if self.thread is not None:
            # Ctrl-C / SIGTERM wait until the write is done: an interrupt raised out of join()
            # would leave the writer running while the process unwinds and exits.
            with signals.held():
                self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    close = wait



class LastCheckpoint:
    """A sweep trial's epochs (train_run's `checkpoints=False`): the checkpoint of the last
    epoch alone (for `zoo train --resume`), then history.json, written once when training
    ends, however it ends; early stopping's best weights are kept in memory.

    A trial stopped midway is trained again from its start, never resumed, so a checkpoint per
    epoch would only be pruned: in a 3-epoch trial of a small model those saves were a fifth of
    its time. `last(epoch, history)` says whether an epoch is the training's last.
    """

    def __init__(self, model, run: Path, made_from: dict, last):
        self.model, self.run, self.made_from, self.last = model, run, made_from, last
        self.best = None  # (epoch, weights) of the best epoch so far, where early stopping keeps one
        self.history = None  # the epochs completed, not yet in history.json

    def commit(self, epoch: int, history: list, keep=()) -> None:
        if epoch in keep:
            self.best = (epoch, self.model.get_weights())
        self.history = list(history)
        if self.last(epoch, history):
            write_checkpoint(self.run, self.model, epoch, self.made_from)
            self.close()

    def close(self) -> None:
        if self.history is not None:
            write_history(self.run, self.history, self.made_from)
            self.history = None


def _lower_this_threads_priority() -> None:
    """Run the calling thread at the lowest CPU priority (nice 19; Linux only, where a thread
    has its own). The checkpoint writer's ~15 ms of Python per epoch otherwise takes a core
    from the epoch training beside it; at nice 19 it runs in the training's gaps, and when
    the next epoch's commit waits for it, alone. Its files and their order are unchanged."""
    if sys.platform.startswith("linux"):
        import threading

        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


# The kinds of object Keras's saving walks (keras.src.saving.saving_lib.get_attr_skipset)
_SAVED_KINDS = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


_skipsets = None  # kind -> the attributes Keras's saving skips; built once per process


def _seed_keras_saving_cache() -> None:
    """Work around a Keras 3 slip that costs ~60% of a small model's save.

    For every object model.save walks, saving_lib.get_attr_skipset builds the set of
    attributes to skip from freshly made reference objects (a Layer, an Optimizer, a
    Metric...), and caches it under "saving_attr_skipset_<kind>" while it looks it up under
    "saving_attr_skiplist_<kind>": the cache never hits (~14 ms of a 24 ms checkpoint of the
    softmax model, on the thread that competes with training for the 2 cores). The sets
    depend only on the kind, so they are built once and put where Keras looks, in the
    calling thread's Keras state (it is thread-local, and clear_session empties it: call this
    before each save). Where Keras differs from this, nothing is seeded and saving is merely slower.
    """
    global _skipsets
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib

        if _skipsets is None:
            _skipsets = {kind: saving_lib.get_attr_skipset(kind) for kind in _SAVED_KINDS}
        for kind, skipset in _skipsets.items():
            global_state.set_global_attribute(f"saving_attr_skiplist_{kind}", skipset)
    except Exception:
        _skipsets = {}



def write_preprocessing(run: Path, prep, made_from: dict) -> Path:
    """preprocessing.json: a table's fitted preprocessing (vocabularies, means, stds), fitted on
    the training split; made with model.keras, so a retraining replaces both."""
    from zoo.core.contract import PREPROCESSING_FILE

    provenance.save_json(run, PREPROCESSING_FILE, prep.to_json(), "train", inputs=[MODEL_KERAS], extra=made_from)
    return run / PREPROCESSING_FILE
