"""Sweeps: a grid of spec overrides x seeds, run as trials of an Optuna study.

The engine is Optuna's RDB storage (SQLite on one machine, PostgreSQL or MySQL across
many); zoo adds only the grid and the run folders. A sweep goes:

1. `plan`: every combination of the `--set` values and seeds is applied to the resolved
   spec and validated exactly like a spec file, before anything is written or run.
2. `open_study`: the first process to create the study (study names are unique in the
   storage, so creation is atomic) enqueues every combination, then marks the study
   ready; every other process, on this machine or another, joins it. Optuna's
   GridSampler would hand the same point to concurrent workers; enqueued trials are
   instead *claimed*: a WAITING -> RUNNING update that exactly one process wins
   (`claim_next`; row locks on PostgreSQL/MySQL, BEGIN IMMEDIATE on SQLite).
3. `work` (one per worker process): claim a trial, beat its heartbeat, build, train,
   export and verify it into an ordinary run folder with the same library functions as
   `zoo run`, and tell the study the result. A trial whose worker died stops beating;
   the next worker to look fails it as stale and enqueues a copy (Optuna's
   RetryHeartbeatStaleTrialCallback). A diverging trial is told FAIL and the sweep goes on.
4. `sweep` (the command) spawns N workers of the same command, shows progress, and
   writes results.md, results.csv, summary.csv and sweep.png into `<out>/sweeps/<study>/`.

A trial's run folder is `<out>/<spec name>-<hash>`, the hash taken over the resolved spec
its overrides make, so a repeat, or another sweep with the same point, reuses a finished
run instead of training it again.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from zoo.core import files, runs
from zoo.core.contract import METRICS_FILE, MODEL_ONNX, SPEC_FILE, VERIFY_FILE
from zoo.core.errors import Interrupted as SignalInterrupted
from zoo.core.errors import SpecError, TrainingError, UsageError, ZooError
from zoo.spec import Spec, load_spec, resolve, validate
from zoo.spec.keys import key_path, set_key
from zoo.spec.schema import NAME_PATTERN

HEARTBEAT_SECONDS = 10  # a worker records a heartbeat this often while it runs a trial
GRACE_FACTOR = 3  # a trial silent for GRACE_FACTOR heartbeats is stale: its worker died
MAX_RETRIES = 3  # a trial whose worker dies this many times (say, killed for memory) stays failed
READY_TIMEOUT = 120  # seconds a joining process waits for the creator to enqueue the grid
ATTR = "zoo:sweep"  # the study's system attribute holding the sweep's definition
READY = "zoo:ready"  # set once every trial is enqueued
METRICS = {"accuracy": "maximize", "loss": "minimize", "mae": "minimize"}
SEED_KEY = "train.seed"


class Interrupted(ZooError):
    """Ctrl-C or SIGTERM: the workers are stopped; their trials are retried by the next run."""

    exit_code = 130
FIXED_KEYS = {"name": "the sweep names each trial's run", "version": "the spec format"}


# ----- the grid ---------------------------------------------------------------------------

def _value(text: str):
    text = text.strip()
    if not text:
        raise ValueError("empty value")
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: sgd, relu


def parse_set(text: str) -> tuple[str, list]:
    """`KEY=V1,V2,...` -> (KEY, [V1, V2, ...]). Values are JSON (0.1, 64, true, [8, 8]) or words (sgd)."""
    key, sep, rhs = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set {text!r}: expected KEY=V1,V2,... such as --set train.learning_rate=0.05,0.1")
    key_path(key)
    if key in FIXED_KEYS:
        raise UsageError(f"--set {key}: cannot be swept ({FIXED_KEYS[key]})")
    try:
        values = json.loads(f"[{rhs}]")  # 0.05,0.1 | [8,8],[64] | "a,b"
    except ValueError:
        try:
            values = [_value(v) for v in rhs.split(",")]
        except ValueError:
            values = None
    if not values:
        raise UsageError(f"--set {key}: no values (an empty grid); give them as {key}=V1,V2")
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise UsageError(f"--set {key}: a value is repeated in {rhs}; give each value once")
    return key, values


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected integers separated by commas, such as 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text}: a seed is repeated; give each seed once")
    return seeds


apply = set_key  # the grid sets each combination's keys


class Point:
    """One trial: a combination of swept values and a seed, and the spec they make."""

    values: dict  # swept key -> value, in --set order (the seed not included)
    seed: int
    run: str  # the run folder's name
    spec: dict  # the resolved, validated spec (its name is `run`)

    @property
    def combo(self) -> str:
        return combo_label(self.values)


def combo_label(values: dict) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items()) or "(spec as is)"


@dataclass
class Plan:
    spec_name: str
    keys: list  # swept keys, in --set order
    choices: dict  # key -> values
    seeds: list
    metric: str
    direction: str
    points: list = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        text = json.dumps([self.metric, [p.spec for p in self.points]], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def default_study(self) -> str:
        return f"{self.spec_name[:48]}-sweep-{self.fingerprint[:8]}"

    def definition(self, heartbeat: int) -> dict:
        return {"spec": self.spec_name, "keys": self.keys, "choices": self.choices, "seeds": self.seeds,
                "metric": self.metric, "direction": self.direction, "trials": len(self.points),
                "heartbeat": heartbeat, "fingerprint": self.fingerprint,
                "runs": [p.run for p in self.points]}


def run_name(spec_name: str, spec: dict) -> str:
    """`<spec name>-<8 hex>`: the hash of the resolved spec (name aside) the overrides make."""
    body = {k: v for k, v in spec.items() if k != "name"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
    return f"{spec_name[:55]}-{digest}"


def plan(spec: Spec | str | Path, sets=(), seeds=None, fixed=None, metric=None) -> Plan:
    """Validate every combination of the grid before anything runs.

    Args:
        spec: the base spec (or its file).
        sets: `KEY=V1,V2` strings, as given to --set.
        seeds: `0,1,2` (or a list of ints); default: the spec's train.seed.
        fixed: {key: value} applied to every trial (zoo run's --epochs and friends).
        metric: the test metric to rank by (default accuracy, or loss for regression).

    Raises:
        UsageError for a malformed or empty grid; SpecError for combinations the spec
        validation refuses, every distinct problem once.
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    grid = dict(parse_set(s) for s in sets)
    if len(grid) != len(sets):
        raise UsageError("--set: a key is given twice; give all its values in one --set KEY=V1,V2")
    if isinstance(seeds, str):
        seeds = parse_seeds(seeds)
    if SEED_KEY in grid:
        raise UsageError(f"--set {SEED_KEY}: give seeds with --seeds 0,1,2")
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None}
    for key in fixed:
        if key in grid:
            raise UsageError(f"{key} is both fixed by its option and swept by --set; give one of them")
    seeds = list(seeds) if seeds else [spec.train.seed]
    if not grid and len(seeds) < 2:
        raise UsageError("nothing to sweep (an empty grid): give --set KEY=V1,V2 and/or --seeds 0,1,2")
    metric = metric or ("accuracy" if spec.is_classifier else "loss")
    allowed = ["accuracy", "loss"] if spec.is_classifier else ["loss", "mae"]
    if metric not in allowed:
        raise UsageError(f"--metric {metric}: {spec.name} reports {' and '.join(allowed)}; pick one of them")

    base = resolve(spec)
    for key, value in fixed.items():
        base = apply(base, key, value)
    keys = list(grid)
    points, problems = [], {}
    for combo in itertools.product(*grid.values()):
        values = dict(zip(keys, combo))
        for seed in seeds:
            data = base
            try:
                for key, value in {**values, SEED_KEY: seed}.items():
                    data = apply(data, key, value)
                checked = resolve(validate(data, "--set"))
            except SpecError as e:
                for p, m in e.problems:
                    problems.setdefault(p, m)
                continue
            name = run_name(spec.name, checked)
            checked["name"] = name
            points.append(Point(values, seed, name, checked))
    if problems:
        raise SpecError("--set", list(problems.items()))
    return Plan(spec.name, keys, grid, seeds, metric, METRICS[metric], points)


# ----- storage ----------------------------------------------------------------------------

def _optuna():
    try:
        import optuna
    except ImportError:
        raise UsageError("zoo sweep needs Optuna and SQLAlchemy: pip install 'zoo[sweep]'") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def normalize_url(url: str) -> str:
    """SQLAlchemy 2.1 wants the driver spelled out: postgresql:// -> postgresql+psycopg2://."""
    for plain, full in (("postgresql://", "postgresql+psycopg2://"), ("postgres://", "postgresql+psycopg2://"),
                        ("mysql://", "mysql+pymysql://")):
        if url.startswith(plain):
            return full + url[len(plain):]
    return url


def masked(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def default_storage(out, study: str) -> str:
    return f"sqlite:///{sweep_dir(out, study) / 'study.db'}"


def sweep_dir(out, study: str) -> Path:
    root = runs.runs_root(out).resolve() / "sweeps"
    return root / study


def connect(url: str, heartbeat: int | None = None):
    """An Optuna RDBStorage on `url`; UsageError (exit 2) when it cannot be reached."""
    optuna = _optuna()
    url = normalize_url(url)
    sqlite = url.startswith("sqlite")
    if sqlite:
        # pysqlite opens a transaction only at the first write, so two workers could both
        # read a trial as WAITING and both claim it. Autocommit at the driver, and every
        # transaction begun IMMEDIATE (write lock first) below, makes a claim atomic.
        kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}}
    elif url.startswith("postgresql"):
        kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    elif url.startswith("mysql"):
        kwargs = {"connect_args": {"connect_timeout": 10}}
    else:
        kwargs = {}
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRIES) if heartbeat else None
    for attempt in range(5):
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                grace_period=heartbeat * GRACE_FACTOR if heartbeat else None, heartbeat_stale_trial_callback=retry)
            break
        except ImportError:
            raise UsageError(f"--storage {masked(url)}: its database driver is not installed "
                             f"(pip install 'zoo[sweep]' brings psycopg2 and PyMySQL)") from None
        except Exception as e:  # sqlalchemy's OperationalError & co: a wrong host, port, password, database
            cause = e.__cause__ or e
            first = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or [type(e).__name__])[0][:200]
            # Processes opening a new database at once race to create Optuna's tables: try again.
            if attempt < 4 and any(w in first.lower() for w in ("already exists", "duplicate", "unique", "locked")):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise UsageError(f"--storage {masked(url)}: cannot open the study storage ({first}); check the URL, "
                             f"that the server runs and that the database exists") from None
    if sqlite:
        from sqlalchemy import event

        @event.listens_for(storage.engine, "begin")
        def _begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    # The cached wrapper a Study puts around an RDBStorage: claims made through it are
    # known to the Study that then runs the trial (one storage object for both).
    return optuna.storages.get_storage(storage)


def _retrying(fn, *args, attempts=30, **kw):
    """Call a storage operation, retrying while the database is busy (SQLite under load)."""
    optuna = _optuna()
    for i in range(attempts):
        try:
            return fn(*args, **kw)
        except optuna.exceptions.StorageInternalError:
            if i == attempts - 1:
                raise
            time.sleep(min(0.05 * 2 ** i, 2.0))


# ----- the study --------------------------------------------------------------------------

def open_study(storage, name: str, the_plan: Plan, heartbeat: int, log=print):
    """Create the study and enqueue the grid, or join the same sweep already there.

    Returns (study, definition). Raises UsageError when the study holds another sweep.
    """
    optuna = _optuna()
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=the_plan.direction)
    except optuna.exceptions.DuplicatedStudyError:
        return join_study(storage, name, the_plan.fingerprint), False
    definition = the_plan.definition(heartbeat)
    study_id = storage.get_study_id_from_name(name)
    study.set_metric_names([the_plan.metric])
    storage.set_study_system_attr(study_id, ATTR, definition)
    for p in the_plan.points:
        params = {k: _param(v) for k, v in p.values.items()} | {SEED_KEY: p.seed}
        study.enqueue_trial(params, user_attrs={"zoo:run": p.run, "zoo:spec": p.spec})
    storage.set_study_system_attr(study_id, READY, len(the_plan.points))
    log(f"study {name}: enqueued {len(the_plan.points)} trials")
    return (study, definition), True


def join_study(storage, name: str, fingerprint: str | None = None, wait=READY_TIMEOUT):
    """(study, definition) of an existing sweep; waits while its creator enqueues the grid."""
    optuna = _optuna()
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UsageError(f"--study {name}: no such study in this storage; "
                         f"start it with `zoo sweep SPEC --set ...`") from None
    study_id = storage.get_study_id_from_name(name)
    started = time.monotonic()
    while True:  # the creator writes ATTR at once, then enqueues the grid, then READY
        attrs = storage.get_study_system_attrs(study_id)
        definition = attrs.get(ATTR)
        if definition is not None and fingerprint is not None and definition["fingerprint"] != fingerprint:
            raise UsageError(f"study {name} holds another sweep (a different spec, grid, seeds or metric); "
                             f"use another --study, or leave --study out to get one named after the grid")
        if definition is not None and READY in attrs:
            return study, definition
        waited = time.monotonic() - started
        if definition is None and waited >= min(wait, 10):
            raise UsageError(f"study {name} was not made by zoo sweep; use another --study")
        if waited >= wait:
            raise UsageError(f"study {name} was created but its grid never enqueued (did its creator die?); "
                             f"delete it (optuna delete-study --study-name {name} --storage URL) or use another --study")
        time.sleep(0.5)


def _param(value):
    """Optuna's categorical choices are scalars; lists and objects travel as JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def claim_next(storage, study_id: int):
    """Claim one WAITING trial (WAITING -> RUNNING, won by exactly one process) or return None.

    Returns the claimed trial's id. Its heartbeat is recorded just before the claim (Optuna
    judges only RUNNING trials stale, so a beat on a WAITING one is harmless): a worker that
    dies right after claiming leaves a trial that turns stale and is retried, where a trial
    claimed with no beat yet would stay RUNNING forever and keep every worker waiting.
    """
    optuna = _optuna()
    waiting = _retrying(storage.get_all_trials, study_id, deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    beats = getattr(storage, "get_heartbeat_interval", lambda: None)() is not None
    for trial in waiting:
        trial_id = _retrying(storage.get_trial_id_from_study_id_trial_number, study_id, trial.number)
        if beats:
            _retrying(storage.record_heartbeat, trial_id)
        try:
            if _retrying(storage.set_trial_state_values, trial_id, state=optuna.trial.TrialState.RUNNING):
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


class Heartbeat:
    """Record the trial's heartbeat every `interval` seconds on a thread while the block runs."""

    def __init__(self, storage, trial_id: int, interval: int):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="zoo-heartbeat", daemon=True)

    def _beat(self):
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat is retried at the next
                self.storage.record_heartbeat(self.trial_id)

    def __enter__(self):
        _retrying(self.storage.record_heartbeat, self.trial_id)  # (claim_next beat once already)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ----- one trial --------------------------------------------------------------------------

def finished_run(run: Path, spec: dict) -> dict | None:
    """metrics.json of a run that was trained from this very spec, exported and verified; else None."""
    try:
        same = json.loads((run / SPEC_FILE).read_text()) == spec
        verified = json.loads((run / VERIFY_FILE).read_text()).get("status") == "passed"
        metrics = json.loads((run / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return metrics if same and verified and (run / MODEL_ONNX).is_file() else None


def run_trial(spec: dict, out, *, data_dir=None, device=None, log=print) -> dict:
    """Build, train, export and verify one trial's run, as `zoo run` does; reuse a finished one.

    Returns {"metrics": metrics.json, "run": folder, "reused": bool}.
    Raises the ZooError of the stage that failed (TrainingError when training diverged).
    """
    run = runs.run_dir(spec["name"], out)
    with runs.locked(run):
        metrics = finished_run(run, spec)
        if metrics is not None:
            log(f"{run}: already trained, exported and verified from this spec; reused")
            return {"metrics": metrics, "run": str(run), "reused": True}
        from zoo.core.backend import import_keras

        keras = import_keras()
        from zoo.stages.export import export_run
        from zoo.stages.train import train

        try:
            metrics = train(validate(spec, run / SPEC_FILE), run, data_dir=data_dir, device=device, quiet=True, log=log)
            export_run(run, data_dir=data_dir, log=log)
        finally:
            keras.backend.clear_session()  # a worker runs many trials: free each one's graphs
    return {"metrics": metrics, "run": str(run), "reused": False}


def _tell(study, trial, definition, result, error, seconds, log):
    """Record a trial's outcome: its test metrics and run folder, or the error it failed with."""
    FAIL = _optuna().trial.TrialState.FAIL
    trial.set_user_attr("zoo:seconds", seconds)
    if error:
        log(f"trial {trial.number} failed: {error}")
        trial.set_user_attr("zoo:error", error)
        study.tell(trial, state=FAIL)
        return
    metrics = result["metrics"]
    trial.set_user_attr("zoo:run_dir", result["run"])
    trial.set_user_attr("zoo:reused", result["reused"])
    trial.set_user_attr("zoo:test", metrics["test"])
    trial.set_user_attr("zoo:train_seconds", metrics.get("wall_seconds"))
    value = metrics["test"][definition["metric"]]
    study.tell(trial, values=value)
    log(f"trial {trial.number}: {definition['metric']} {value:.4f} ({seconds:.1f}s)")


def _needs_training(storage, study_id, out) -> bool:
    """Whether a waiting trial has no finished run to reuse (a worker then loads Keras up front)."""
    TrialState = _optuna().trial.TrialState
    waiting = _retrying(storage.get_all_trials, study_id, deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    return any(finished_run(runs.run_dir(t.user_attrs["zoo:run"], out), t.user_attrs["zoo:spec"]) is None
               for t in waiting if "zoo:run" in t.user_attrs)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def work(url: str, study_name: str, *, out=None, data_dir=None, device="cpu", heartbeat=HEARTBEAT_SECONDS, log=print) -> int:
    """One worker: run the study's trials until none is waiting or running. Returns trials run."""
    optuna = _optuna()
    TrialState = optuna.trial.TrialState
    storage = connect(url, heartbeat=heartbeat)
    study, definition = join_study(storage, study_name)
    study_id = storage.get_study_id_from_name(study_name)
    if _needs_training(storage, study_id, out):
        from zoo.core.backend import import_keras

        import_keras()  # now, so that the first trial's time is the trial's, not TensorFlow's start
    done = 0
    while True:
        with contextlib.suppress(optuna.exceptions.StorageInternalError):
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial -> FAIL + a WAITING copy
        trial_id = claim_next(storage, study_id)
        if trial_id is None:
            running = _retrying(storage.get_all_trials, study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                return done
            time.sleep(heartbeat)  # wait: a running trial may turn stale and come back
            continue
        with Heartbeat(storage, trial_id, heartbeat):
            trial = optuna.Trial(study, trial_id)
            trial.set_user_attr("zoo:worker", worker_id())
            for key in definition["keys"]:
                trial.suggest_categorical(key, [_param(v) for v in definition["choices"][key]])
            trial.suggest_categorical(SEED_KEY, definition["seeds"])
            spec = trial.user_attrs["zoo:spec"]
            log(f"trial {trial.number}: {spec['name']} {combo_label(trial.params)}")
            started = time.perf_counter()
            result, error = None, None
            try:
                result = run_trial(spec, out, data_dir=data_dir, device=device, log=log)
            except ZooError as e:
                error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            except Exception as e:  # a bug: the sweep goes on, the log has the traceback
                log(traceback.format_exc())
                error = f"internal error {type(e).__name__}: {str(e)[:200]}"
            try:
                _tell(study, trial, definition, result, error, round(time.perf_counter() - started, 3), log)
            except optuna.exceptions.UpdateFinishedTrialError:  # declared stale while we were busy (a lost database?)
                log(f"trial {trial.number} was failed as stale before it finished; its retry reuses the run")
            done += 1


# ----- the command ------------------------------------------------------------------------

def sweep(spec_file, sets=(), seeds=None, *, fixed=None, metric=None, workers=1, storage_url=None,
          study_name=None, out=None, data_dir=None, device=None, backend=None, heartbeat=HEARTBEAT_SECONDS,
          quiet=False, echo=print) -> dict:
    """Run a sweep: validate the grid, create or join the study, run N workers, write the results.

    Returns the results (see `results`). Raises UsageError/SpecError (exit 2) before anything
    runs for a bad grid or an unreachable storage; TrainingError (exit 4) when every trial failed.
    """
    the_plan = plan(spec_file, sets, seeds, fixed, metric)
    name = study_name or the_plan.default_study
    if not re.match(NAME_PATTERN, name):
        raise UsageError(f"--study {name!r}: use letters, digits, '-' and '_' (it names the folder sweeps/{name[:64]})")
    folder = sweep_dir(out, name)
    if storage_url is None:
        _mkdir(folder)
        storage_url = default_storage(out, name)
    storage = connect(storage_url)
    (study, definition), created = open_study(storage, name, the_plan, heartbeat, log=lambda m: None)
    _mkdir(folder)
    total = definition["trials"]
    echo(f"sweep {name}: {total} trials ({len(the_plan.points) // len(the_plan.seeds)} combinations x "
         f"{len(the_plan.seeds)} seeds) in {masked(normalize_url(storage_url))}"
         + ("" if created else " (joined)"))
    echo(f"runs go to {runs.runs_root(out).resolve()}/{the_plan.spec_name}-<hash>; results to {folder}")
    if _unfinished(study):
        procs = _spawn(workers, storage_url, name, out, data_dir, device, backend, definition["heartbeat"], folder)
        try:
            with _sigterm_interrupts():
                _monitor(study, definition, procs, quiet, echo)
        except KeyboardInterrupt as e:  # Ctrl-C (130) or SIGTERM (errors.Interrupted, 143), as everywhere in zoo
            grace = definition["heartbeat"] * GRACE_FACTOR
            stopped = Interrupted(f"{'terminated (SIGTERM)' if isinstance(e, SignalInterrupted) else 'interrupted'}; "
                                  f"finished trials are kept: run the same command again to continue "
                                  f"(a trial cut short is retried once its heartbeat is {grace}s old)")
            stopped.exit_code = SignalInterrupted.exit_code if isinstance(e, SignalInterrupted) else 130
            raise stopped from None
        finally:
            _stop(procs)
    found = results(study, definition)
    write_results(found, folder)
    echo(found["markdown"])
    echo(f"wrote {folder}/results.md, results.csv, summary.csv, sweep.png")
    if not found["best"]:
        raise TrainingError(f"every trial of sweep {name} failed; see {folder}/results.md "
                            f"and the worker logs in {folder}/logs")
    return found


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a scheduler cancelling the job) stops the workers like Ctrl-C does."""
    def interrupt(signum, frame):
        raise SignalInterrupted()

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _mkdir(folder: Path):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{folder}: cannot create the sweep folder ({e.strerror}); choose a writable --out") from None


def _unfinished(study) -> bool:
    TrialState = _optuna().trial.TrialState
    return bool(_retrying(study.get_trials, deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))


def _spawn(n, storage_url, study_name, out, data_dir, device, backend, heartbeat, folder) -> list:
    """Start n worker processes of this command; their output goes to <sweep>/logs/."""
    logs = folder / "logs"
    _mkdir(logs)
    env = dict(os.environ)
    env["ZOO_SWEEP_STORAGE"] = storage_url  # not on the command line: it may hold a password
    if device != "gpu":
        env.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # trials train on CPU; TF then never touches the GPU
    threads = str(max(1, (os.cpu_count() or 1) // n))  # n workers share the cores instead of fighting over them
    for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        env.setdefault(var, threads)
    env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"  # the log holds every line up to a kill
    if backend:
        env["KERAS_BACKEND"] = backend
    cmd = [sys.executable, "-m", "zoo", "sweep", "--worker", "--study", study_name, "--heartbeat", str(heartbeat),
           "--out", str(runs.runs_root(out).resolve())]
    if data_dir:
        cmd += ["--data-dir", str(Path(data_dir).resolve())]
    cmd += ["--device", device or "cpu"]
    procs = []
    for i in range(n):
        log_path = logs / f"worker-{socket.gethostname()}-{os.getpid()}-{i}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        proc.log_path = log_path
        procs.append(proc)
    return procs


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _monitor(study, definition, procs, quiet, echo):
    """Show progress until no trial is waiting or running; say when a local worker dies."""
    TrialState = _optuna().trial.TrialState
    total, seen, reported = definition["trials"], set(), set()
    bar = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True)
    try:
        while True:
            trials = _retrying(study.get_trials, deepcopy=False)
            final = [t for t in trials if t.state.is_finished() and t.number not in seen]
            for t in final:
                seen.add(t.number)
                if _will_retry(t):
                    continue  # its worker died; a copy runs again
                line = _progress_line(t, definition, len(_final_runs(trials)), total)
                if bar is not None:
                    bar.write(line)
                elif not quiet:
                    echo(line)
            if bar is not None:
                bar.n = len(_final_runs(trials))
                running = sum(t.state == TrialState.RUNNING for t in trials)
                bar.set_postfix_str(f"{running} running", refresh=True)
            for p in procs:
                code = p.poll()
                if code is not None and p.pid not in reported:
                    reported.add(p.pid)
                    if code:
                        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
                        echo(f"worker pid {p.pid} {how}; its trial goes back to the others (log: {p.log_path})")
            unfinished = [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
            if not unfinished:
                return
            if all(p.poll() is not None for p in procs):
                if all(p.returncode == 0 for p in procs):  # ours are done; other machines' workers still run
                    time.sleep(1)
                    continue
                raise ZooError(f"every worker stopped with {len(unfinished)} trial(s) unfinished; see "
                               f"{procs[0].log_path.parent}; run the same command again to continue")
            time.sleep(0.5)
    finally:
        if bar is not None:
            bar.close()


def _retried(trials) -> set:
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _stale(t) -> bool:
    """Failed because its worker stopped beating (a told failure carries zoo:error)."""
    return t.state.name == "FAIL" and "zoo:error" not in t.user_attrs


def _will_retry(t) -> bool:
    return _stale(t) and len(t.system_attrs.get("retry_history", [])) < MAX_RETRIES


def _final_runs(trials) -> set:
    """Runs whose trial finished for good: completed, or failed and not to be retried."""
    return {t.user_attrs.get("zoo:run") for t in trials if t.state.is_finished() and not _will_retry(t)}


def _progress_line(t, definition, done, total) -> str:
    where = t.user_attrs.get("zoo:run", "?")
    params = combo_label({k: t.params.get(k) for k in [*definition["keys"], SEED_KEY] if k in t.params})
    if t.state.name == "COMPLETE":
        what = f"{definition['metric']} {t.value:.4f}" + (" (reused)" if t.user_attrs.get("zoo:reused") else "")
    else:
        what = t.user_attrs.get("zoo:error") or t.state.name.lower()
    seconds = t.user_attrs.get("zoo:seconds")
    return f"[{done}/{total}] {where}  {params}  {what}" + (f"  {seconds:.1f}s" if seconds is not None else "")


# ----- results ----------------------------------------------------------------------------

def results(study, definition) -> dict:
    """Every trial's outcome, mean ± std over seeds per combination, the best, as tables."""
    trials = _retrying(study.get_trials, deepcopy=False)
    retried = _retried(trials)
    by_run = {}
    for t in sorted(trials, key=lambda t: t.number):
        run = t.user_attrs.get("zoo:run")
        if run is None or _will_retry(t):
            continue
        if t.state.name == "COMPLETE" or run not in by_run or by_run[run]["state"] != "complete":
            by_run[run] = _row(t, definition)
    rows = [by_run.get(run) or {"run": run, "state": "missing"} for run in definition["runs"]]
    metric, sign = definition["metric"], 1 if definition["direction"] == "maximize" else -1
    combos = {}
    for row in rows:
        if "values" in row:
            combos.setdefault(json.dumps(row["values"]), []).append(row)
    summary = []
    for key, group in combos.items():
        done = [r for r in group if r["state"] == "complete"]
        stats = {}
        for m in (done[0]["test"] if done else {}):
            xs = [r["test"][m] for r in done]
            stats[m] = (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)
        summary.append({"values": json.loads(key), "n": len(done), "of": len(group), "stats": stats,
                        "runs": [r["run_dir"] for r in done]})
    ranked = [s for s in summary if metric in s["stats"]]
    best = max(ranked, key=lambda s: sign * s["stats"][metric][0]) if ranked else None
    if best:
        best_rows = [r for r in rows if r["state"] == "complete" and r["values"] == best["values"]]
        best = {**best, "best_run": max(best_rows, key=lambda r: sign * r["test"][metric])}
    found = {"definition": definition, "rows": rows, "summary": summary, "best": best,
             "retried": len(retried), "study": study.study_name}
    found["markdown"] = markdown(found)
    return found


def _row(t, definition) -> dict:
    fixed = t.system_attrs.get("fixed_params", {})
    values = {}
    for k in definition["keys"]:
        values[k] = _unparam(t.params.get(k, fixed.get(k)), definition["choices"][k])
    return {"trial": t.number, "run": t.user_attrs.get("zoo:run"), "values": values,
            "seed": t.params.get(SEED_KEY, fixed.get(SEED_KEY)), "state": t.state.name.lower(),
            "test": t.user_attrs.get("zoo:test", {}), "train_seconds": t.user_attrs.get("zoo:train_seconds"),
            "seconds": t.user_attrs.get("zoo:seconds"), "reused": t.user_attrs.get("zoo:reused", False),
            "run_dir": t.user_attrs.get("zoo:run_dir"),
            "error": t.user_attrs.get("zoo:error") or (f"its worker died {MAX_RETRIES + 1} times" if _stale(t) else ""),
            "worker": t.user_attrs.get("zoo:worker", "")}


def _unparam(value, choices):
    for c in choices:
        if _param(c) == value:
            return c
    return value


def _fmt(x, digits=4):
    return "" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown(found) -> str:
    d, rows = found["definition"], found["rows"]
    metrics = sorted({m for r in rows for m in r.get("test", {})}, key=lambda m: (m != d["metric"], m))
    head = [*d["keys"], "seed", "state", *metrics, "train s", "trial s", "run"]
    title = f"## Sweep {found['study']}: {d['spec']}, {d['trials']} trials, ranked by test {d['metric']} ({d['direction']})"
    lines = [title,
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "values" not in r:
            lines.append(f"| {r['run']} | {r['state']} |")
            continue
        state = r["state"] + (" (reused)" if r["reused"] else "") + (f": {r['error']}" if r["error"] else "")
        cells = [json.dumps(r["values"][k]) for k in d["keys"]] + [str(r["seed"]), state]
        cells += [_fmt(r["test"].get(m)) for m in metrics] + [_fmt(r["train_seconds"], 2), _fmt(r["seconds"], 2),
                                                            Path(r["run_dir"]).name if r["run_dir"] else r["run"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "### Mean ± std over seeds", "",
              "| " + " | ".join([*d["keys"], "seeds", *metrics]) + " |", "|" + "---|" * (len(d["keys"]) + 1 + len(metrics))]
    for s in found["summary"]:
        cells = [json.dumps(s["values"][k]) for k in d["keys"]] + [f"{s['n']}/{s['of']}"]
        cells += [f"{s['stats'][m][0]:.4f} ± {s['stats'][m][1]:.4f}" if m in s["stats"] else "" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    best = found["best"]
    lines.append("")
    if best:
        mean, std = best["stats"][d["metric"]]
        b = best["best_run"]
        lines.append(f"Best: {combo_label(best['values'])}: test {d['metric']} {mean:.4f} ± {std:.4f} over "
                     f"{best['n']} seed(s); its best run: {b['run_dir']} (seed {b['seed']}, {d['metric']} "
                     f"{b['test'][d['metric']]:.4f})")
    else:
        lines.append("Best: none (no trial completed)")
    failed = [r for r in rows if r["state"] == "fail"]
    if failed or found["retried"]:
        lines.append(f"{len(failed)} trial(s) failed; {found['retried']} retried after their worker died")
    return "\n".join(lines) + "\n"


def write_results(found, folder: Path) -> None:
    d = found["definition"]
    metrics = sorted({m for r in found["rows"] for m in r.get("test", {})})
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["trial", "run", *d["keys"], "seed", "state", *(f"test_{m}" for m in metrics),
                "train_seconds", "trial_seconds", "reused", "run_dir", "worker", "error"])
    for r in found["rows"]:
        if "values" not in r:
            w.writerow(["", r["run"], *[""] * (len(d["keys"]) + 1), r["state"]])
            continue
        w.writerow([r["trial"], r["run"], *(_csv(r["values"][k]) for k in d["keys"]), r["seed"], r["state"],
                    *(r["test"].get(m, "") for m in metrics), r["train_seconds"] or "", r["seconds"] or "",
                    r["reused"], r["run_dir"] or "", r["worker"], r["error"]])
    files.write_text(folder / "results.csv", out.getvalue())
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*d["keys"], "seeds_completed", "seeds", *(f"{m}_{s}" for m in metrics for s in ("mean", "std")), "runs"])
    for s in found["summary"]:
        w.writerow([*(_csv(s["values"][k]) for k in d["keys"]), s["n"], s["of"],
                    *(v for m in metrics for v in (s["stats"].get(m, ("", ""))[0], s["stats"].get(m, ("", ""))[1])),
                    " ".join(s["runs"])])
    files.write_text(folder / "summary.csv", out.getvalue())
    files.write_text(folder / "results.md", found["markdown"])
    plot(found, folder / "sweep.png")


def _csv(value):
    return value if isinstance(value, (int, float, str)) else json.dumps(value)


def plot(found, path: Path) -> None:
    """The metric against each swept parameter: every trial a dot, the mean per value a line."""
    from zoo.stages.plots import _pyplot

    plt = _pyplot()
    d = found["definition"]
    metric = d["metric"]
    done = [r for r in found["rows"] if r["state"] == "complete"]
    keys = d["keys"] or [SEED_KEY]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], keys):
        choices = d["choices"].get(key, d["seeds"])  # one evenly spaced slot per value, as the grid has them
        value_of = (lambda r: r["seed"]) if key == SEED_KEY else (lambda r, k=key: r["values"][k])
        means = []
        for i, c in enumerate(choices):
            ys = [r["test"][metric] for r in done if json.dumps(value_of(r)) == json.dumps(c)]
            ax.scatter([i] * len(ys), ys, s=14, alpha=0.6, color="tab:blue", label="a trial" if i == 0 else None)
            means.append(statistics.fmean(ys) if ys else math.nan)
        ax.plot(range(len(choices)), means, marker="o", color="tab:orange", label="mean")
        ax.set_xticks(range(len(choices)), [json.dumps(c) if not isinstance(c, str) else c for c in choices])
        ax.set_xlim(-0.5, len(choices) - 0.5)
        ax.set_xlabel(key)
        ax.set_ylabel(f"test {metric}")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"{d['spec']}: {len(done)} trials", fontsize=10)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# ----- status -----------------------------------------------------------------------------

def status(storage_url=None, study_name=None, out=None, echo=print) -> None:
    """Print the progress of one sweep, or of every sweep in a storage (or under <out>/sweeps)."""
    if storage_url is None and study_name is None:
        found = sorted((runs.runs_root(out).resolve() / "sweeps").glob("*/study.db"))
        if not found:
            raise UsageError(f"no sweep under {runs.runs_root(out).resolve()}/sweeps; give --storage URL and --study NAME")
        for db in found:
            _status_of(connect(f"sqlite:///{db}"), db.parent.name, echo, table=False)
        return
    url = storage_url or default_storage(out, study_name)
    if storage_url is None and not (sweep_dir(out, study_name) / "study.db").is_file():
        raise UsageError(f"no sweep {study_name} under {runs.runs_root(out).resolve()}/sweeps; give --storage URL")
    storage = connect(url)
    if study_name is None:
        studies = [s.study_name for s in storage.get_all_studies() if ATTR in s.system_attrs]
        if not studies:
            raise UsageError(f"--storage {masked(normalize_url(url))}: no zoo sweep in it yet")
        for name in studies:
            _status_of(storage, name, echo, table=False)
        return
    _status_of(storage, study_name, echo, table=True)


def _status_of(storage, name, echo, table):
    study, definition = join_study(storage, name, wait=0)
    trials = _retrying(study.get_trials, deepcopy=False)
    count = {}
    for t in trials:
        if not _will_retry(t):
            count[t.state.name.lower()] = count.get(t.state.name.lower(), 0) + 1
    parts = [f"{count.get(s, 0)} {s}" for s in ("complete", "running", "waiting", "fail") if count.get(s)]
    done = len(_final_runs(trials))
    echo(f"{name}: {done}/{definition['trials']} trials finished ({', '.join(parts) or 'none yet'})")
    for t in trials:
        if t.state.name == "RUNNING":
            echo(f"  running: {t.user_attrs.get('zoo:run')} on {t.user_attrs.get('zoo:worker', '?')}")
    if table:
        echo(results(study, definition)["markdown"])
