"""A sweep's worker: claim a trial, run it into an ordinary run folder, tell the study; again,
until no trial is waiting or running.

A trial is built and trained by `zoo.api.train` (the sweep's `--export best`, the default,
or `none`: the sweep exports and verifies only its best run at the end), or built, trained,
exported and verified by `zoo.api.run` (`--export all`), as `zoo run` does. A run folder
already made so from the very same spec (its provenance record intact) is reused instead.
A diverging trial is told FAIL and the sweep goes on. A worker keeps each dataset it
loads (zoo.stages.data.keep_loaded): its trials read the data once.

`zoo sweep` starts workers as `python -m zoo.sweep.worker --study NAME ...` with the
storage URL in $ZOO_SWEEP_STORAGE (not on the command line: it may hold a password); a
job scheduler can start more, on any machine that reaches the storage.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from zoo import api
from zoo.core import console, files, runs, signals
from zoo.core.backend import import_keras, own_process
from zoo.core.contract import SPEC_FILE
from zoo.core.errors import ZooError
from zoo.stages.data import keep_loaded
from zoo.stages.train.reuse import keep_traced
from zoo.sweep.best import EXPORTED, export_run, finished_run
from zoo.sweep.grid import SEED_KEY, combo_label
from zoo.sweep.study import (
    HEARTBEAT_SECONDS,
    READY_TIMEOUT,
    Heartbeat,
    claim_next,
    connect,
    join_study,
    optuna,
    param,
    retrying,
    storage_errors,
    trials_in,
    unfinished,
)

IDLE_SECONDS = 0.2  # how often an idle worker looks again while other workers' trials run (the sweep waits
# for every worker to leave: a worker idle at the last trial's end leaves at most this much later)


def run_trial(spec: dict, out, *, export="all", data_dir=None, device=None, log=print) -> dict:
    """Build and train one trial's run (`export` "all": also export and verify it, as `zoo run`
    does); reuse a finished one.

    Returns {"metrics": metrics.json, "run": folder, "reused": bool}.
    Raises the ZooError of the stage that failed (TrainingError when training diverged,
    RunLockedError when another process works on the run).
    """
    run = runs.run_dir(spec["name"], out)
    with runs.locked(run):  # not while another process is making it
        metrics = finished_run(run, spec, export)
    if metrics is not None:
        log(f"{run}: already {'trained, exported and verified' if export == 'all' else 'trained'} "
            f"from this spec; reused")
        return {"metrics": metrics, "run": str(run), "reused": True}
    keras = import_keras()
    try:
        if export == "all":
            metrics = api.run(spec, out=out, data_dir=data_dir, device=device, log=log, quiet=True)["metrics"]
        else:
            # a trial stopped midway is trained again from its start: no checkpoint per epoch
            metrics = api.train(spec, out=out, data_dir=data_dir, device=device, log=log, quiet=True, plots=False,
                                checkpoints=False)
    finally:
        # Keras's names and global state as a fresh process has them; the collection
        # clear_session would also run (~0.2 s a trial) is left to Python's own gc
        keras.backend.clear_session(free_memory=False)
    return {"metrics": metrics, "run": str(run), "reused": False}


def _tell(study, trial, definition, result, error, seconds, log):
    """Record a trial's outcome: its test metrics and run folder, or the error it failed with."""
    trial.set_user_attr("zoo:seconds", seconds)
    if error:
        log(f"trial {trial.number} failed: {error}")
        trial.set_user_attr("zoo:error", error)
        study.tell(trial, state=optuna().trial.TrialState.FAIL)
        return
    metrics = result["metrics"]
    trial.set_user_attr("zoo:run_dir", result["run"])
    trial.set_user_attr("zoo:reused", result["reused"])
    trial.set_user_attr("zoo:test", metrics["test"])
    trial.set_user_attr("zoo:train_seconds", metrics.get("wall_seconds"))
    value = metrics["test"][definition["metric"]]
    study.tell(trial, values=value)
    log(f"trial {trial.number}: {definition['metric']} {value:.4f} ({seconds:.1f}s)")


def _needs_training(storage, study_id, out, export) -> bool:
    """Whether a waiting trial has no finished run to reuse (a worker then loads Keras up front)."""
    TrialState = optuna().trial.TrialState
    waiting = trials_in(storage, study_id, TrialState.WAITING, TrialState.RUNNING)
    return any(finished_run(runs.run_dir(t.user_attrs["zoo:run"], out), t.user_attrs["zoo:spec"], export) is None
               for t in waiting if "zoo:run" in t.user_attrs)


def _export_best(study, definition, storage, study_id, out, data_dir, log) -> None:
    """Every trial finished: export and verify the best run (once; see zoo.sweep.best) and record it on the study."""
    from zoo.sweep.report import results

    best = results(study, definition)["best"]
    if not best:
        return  # every trial failed: the sweep's process says so
    run = Path(best["best_run"]["run_dir"])
    if finished_run(run, files.read_json(run / SPEC_FILE), "all") is not None:
        return
    try:
        done = export_run(run, data_dir)
    except ZooError as e:  # the sweep's process tries again and reports the error with its exit code
        log(f"exporting the best run {run} failed: {type(e).__name__}: {str(e).splitlines()[0]}")
        return
    if done is not None:
        retrying(storage.set_study_system_attr, study_id, EXPORTED, {**done, "run": str(run), "worker": worker_id()})
        log(f"exported the best run {run}: verify.json {done['status']} ({done['seconds']:.1f}s)")


def model_key(spec: dict) -> str:
    """What a trial's traced epoch depends on, near enough (zoo.stages.train.reuse has the exact key)."""
    return json.dumps([spec.get("model"), spec.get("data")], sort_keys=True, default=str)


def affinity(trained: set, storage, study_id: int):
    """order(waiting trials) for claim_next: those of a model this worker has trained first (its
    traced epoch is warm), else those of a model no running trial has (another worker's is warm
    there), each in the grid's order. Two workers on a grid of 3 models trace 4 times, not 6."""
    def of(t) -> str:
        return model_key(t.user_attrs.get("zoo:spec") or {})

    def order(waiting):
        key = {t.number: of(t) for t in waiting}
        if any(k in trained for k in key.values()):
            return sorted(waiting, key=lambda t: key[t.number] not in trained)  # stable: the grid's order
        running = {of(t) for t in trials_in(storage, study_id, optuna().trial.TrialState.RUNNING)}
        return sorted(waiting, key=lambda t: key[t.number] in running)
    return order


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _run_claimed(study, trial_id, definition, *, out, data_dir, device, log) -> dict:
    """Run the trial this worker claimed and tell the study how it went; a trial's failure is the trial's.
    Returns the trial's spec."""
    op = optuna()
    trial = op.Trial(study, trial_id)
    trial.set_user_attr("zoo:worker", worker_id())
    for key in definition["keys"]:
        trial.suggest_categorical(key, [param(v) for v in definition["choices"][key]])
    trial.suggest_categorical(SEED_KEY, definition["seeds"])
    spec = trial.user_attrs["zoo:spec"]
    log(f"trial {trial.number}: {spec['name']} {combo_label(trial.params)}")
    started = time.perf_counter()
    result, error = None, None
    try:
        result = run_trial(spec, out, export=definition.get("export", "all"), data_dir=data_dir, device=device,
                           log=log)  # a sweep made before --export existed exported every run
    except ZooError as e:
        error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    except Exception as e:  # a bug: the sweep goes on, the log has the traceback
        log(traceback.format_exc())
        error = f"internal error {type(e).__name__}: {str(e)[:200]}"
    try:
        _tell(study, trial, definition, result, error, round(time.perf_counter() - started, 3), log)
    except op.exceptions.UpdateFinishedTrialError:  # declared stale while we were busy (a lost database?)
        log(f"trial {trial.number} was failed as stale before it finished; its retry reuses the run")
    return spec


def work(url: str, study_name: str, *, out=None, data_dir=None, device="cpu", heartbeat=HEARTBEAT_SECONDS,
         log=print, early=False) -> int:
    """One worker: run the study's trials until none is waiting or running. Returns trials run.

    `early`: started by `zoo sweep` while it still makes the study; load Keras first, then
    wait for the study (up to READY_TIMEOUT seconds).
    """
    if early:
        import_keras()  # TensorFlow's ~3 s start overlaps the sweep's process making the study
    op = optuna()
    storage = connect(url, heartbeat=heartbeat)
    study, definition = join_study(storage, study_name, appear=READY_TIMEOUT if early else 0)
    study_id = storage.get_study_id_from_name(study_name)
    keep_loaded()  # every trial of this worker on the same data reads it once
    keep_traced()  # ... and trains one traced model per architecture (zoo.stages.train.reuse)
    if not early and _needs_training(storage, study_id, out, definition.get("export", "all")):
        import_keras()  # now, so that the first trial's time is the trial's, not TensorFlow's start
    done, trained = 0, set()
    while True:
        with contextlib.suppress(op.exceptions.StorageInternalError):
            op.storages.fail_stale_trials(study)  # a dead worker's trial -> FAIL + a WAITING copy
        trial_id = claim_next(storage, study_id, affinity(trained, storage, study_id))
        if trial_id is None:
            if not unfinished(trials_in(storage, study_id, *op.trial.TrialState)):
                if definition.get("export") == "best":
                    _export_best(study, definition, storage, study_id, out, data_dir, log)
                return done
            time.sleep(min(heartbeat, IDLE_SECONDS))  # wait: a running trial may turn stale and come back
            continue
        with Heartbeat(storage, trial_id, heartbeat):
            trained.add(model_key(_run_claimed(study, trial_id, definition, out=out, data_dir=data_dir,
                                               device=device, log=log)))
        done += 1


# ----- the worker process -----------------------------------------------------------------------

def command(study_name: str, *, heartbeat: int, out, data_dir=None, device=None, early=False) -> list[str]:
    """The command line that starts a worker of this study (its storage URL goes in $ZOO_SWEEP_STORAGE)."""
    cmd = [sys.executable, "-m", "zoo.sweep.worker", "--study", study_name, "--heartbeat", str(heartbeat),
           "--out", str(runs.runs_root(out).resolve())] + (["--early"] if early else [])
    if data_dir:
        cmd += ["--data-dir", str(Path(data_dir).resolve())]
    return cmd + ["--device", device or "cpu"]


def _parse(argv):
    import argparse

    p = argparse.ArgumentParser(prog="python -m zoo.sweep.worker",
                                description="Run the trials of a zoo sweep's study until none is left "
                                            "(zoo sweep starts these; a job scheduler can start more).")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument("--storage", default=os.environ.get("ZOO_SWEEP_STORAGE") or None, metavar="URL",
                   help="the study's Optuna RDB storage [default: $ZOO_SWEEP_STORAGE]")
    p.add_argument("--heartbeat", type=int, default=HEARTBEAT_SECONDS, help="seconds between a trial's heartbeats")
    p.add_argument("--out", help="where the runs go [default: $ZOO_OUT, else exports]")
    p.add_argument("--data-dir", help="the datasets' folder [default: $ZOO_DATA_DIR]")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--early", action="store_true",
                   help="the study is still being made (zoo sweep starts its workers so): load Keras, then wait for it")
    args = p.parse_args(argv)
    if not args.storage:
        p.error("give --storage URL or set $ZOO_SWEEP_STORAGE")
    return args


def main(argv=None) -> int:
    """The worker process: exit 0 when no trial is left, else a ZooError's exit code, 130 or 143."""
    signals.install()
    own_process()  # Keras loads without the extras zoo never uses (zoo.core.backend)
    if not os.environ.get("ZOO_DEBUG"):
        import warnings

        warnings.simplefilter("ignore")  # as the zoo command does: the log holds zoo's lines
    args = _parse(argv)
    # a bug keeps its traceback: the worker's log is where it is read; a failing storage (a corrupt
    # study.db, a database gone) is one line and exit 2, as for `zoo sweep`
    return console.exit_code(_work_on_storage, args.storage, args.study, out=args.out, data_dir=args.data_dir,
                             device=args.device, heartbeat=args.heartbeat, early=args.early, tracebacks=True)


def _work_on_storage(url: str, study_name: str, **kw) -> int:
    with storage_errors(url):
        return work(url, study_name, **kw)


if __name__ == "__main__":
    console.finish(main())  # os._exit after the last flush: TensorFlow's teardown is a second the sweep waits for
