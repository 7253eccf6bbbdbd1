"""The study: Optuna's RDB storage, the sweep's trials in it, and who runs which.

The engine is Optuna's RDB storage (SQLite on one machine, PostgreSQL or MySQL across
many); zoo adds only the grid and the run folders. The first process to create the study
(study names are unique in the storage, so creation is atomic) enqueues every point of the
grid, then marks the study ready; every other process, on this machine or another, joins
it. Optuna's GridSampler would hand the same point to concurrent workers; enqueued trials
are instead *claimed*: a WAITING -> RUNNING update that exactly one process wins
(`claim_next`; row locks on PostgreSQL/MySQL, BEGIN IMMEDIATE on SQLite). A running
trial's worker beats its heartbeat; a trial whose worker died stops beating, and the next
worker to look fails it as stale and enqueues a copy (RetryHeartbeatStaleTrialCallback).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import threading
import time
from pathlib import Path

from zoo.core import runs
from zoo.core.errors import UsageError, ZooError
from zoo.sweep.grid import SEED_KEY, Plan

HEARTBEAT_SECONDS = 10  # a worker records a heartbeat this often while it runs a trial
GRACE_FACTOR = 3  # a trial silent for GRACE_FACTOR heartbeats is stale: its worker died
MAX_RETRIES = 3  # a trial whose worker dies this many times (say, killed for memory) stays failed
READY_TIMEOUT = 120  # seconds a joining process waits for the creator to enqueue the grid
COPY_SECONDS = 10  # how long a stale trial's retry copy may take to appear (its failer adds it next)
ATTR = "zoo:sweep"  # the study's system attribute holding the sweep's definition
READY = "zoo:ready"  # set once every trial is enqueued
STUDY_DB = "study.db"  # the default storage: SQLite inside the sweep folder
EXPORTS = ("best", "all", "none")  # --export: which runs of a sweep get model.onnx, card.md and verify.json
INSTALL = "pip install -e '.[sweep]'"  # the README's words: zoo is installed from its checkout


def optuna():
    """The optuna module, quiet; UsageError (exit 2) when the sweep extra is not installed."""
    try:
        import optuna
    except ImportError:
        raise UsageError(f"zoo sweep needs Optuna and SQLAlchemy: {INSTALL} (in zoo's checkout)") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# ----- storage ----------------------------------------------------------------------------

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


def sweep_dir(out, study: str) -> Path:
    """`<out>/sweeps/<study>/`: the sweep's results, worker logs and default storage."""
    return runs.runs_root(out).resolve() / "sweeps" / study


def default_storage(out, study: str) -> str:
    return f"sqlite:///{sweep_dir(out, study) / STUDY_DB}"


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # pysqlite opens a transaction only at the first write, so two workers could both
        # read a trial as WAITING and both claim it. Autocommit at the driver, and every
        # transaction begun IMMEDIATE (write lock first, see connect), makes a claim atomic.
        return {"connect_args": {"timeout": 60, "isolation_level": None}}
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    if url.startswith("mysql"):
        # PyMySQL's connect_timeout covers the TCP connect only; the server's greeting is read
        # under read_timeout (none by default): a port that accepts and never answers hung forever
        return {"connect_args": {"connect_timeout": 10, "read_timeout": 30, "write_timeout": 30}, "pool_pre_ping": True}
    return {}


def _rdb_storage(url: str, heartbeat: int | None):
    """Optuna's RDBStorage on a normalized `url`; UsageError (exit 2) when it cannot be opened."""
    storages = optuna().storages
    retry = storages.RetryHeartbeatStaleTrialCallback(MAX_RETRIES) if heartbeat else None
    for attempt in range(5):
        try:
            return storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat,
                grace_period=heartbeat * GRACE_FACTOR if heartbeat else None, heartbeat_stale_trial_callback=retry)
        except ImportError:
            raise UsageError(f"--storage {masked(url)}: its database driver is not installed "
                             f"({INSTALL} brings psycopg2 and PyMySQL)") from None
        except Exception as e:  # sqlalchemy's OperationalError & co: a wrong host, port, password, database
            cause = e.__cause__ or e
            first = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or [type(e).__name__])[0][:200]
            # Processes opening a new database at once race to create Optuna's tables: try again.
            if attempt < 4 and any(w in first.lower() for w in ("already exists", "duplicate", "unique", "locked")):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise UsageError(f"--storage {masked(url)}: cannot open the study storage ({first}); check the URL, "
                             f"that the server runs and that the database exists") from None


@contextlib.contextmanager
def storage_errors(url: str):
    """A failure of the study storage after it opened (a corrupt page of a SQLite study.db,
    a database server gone) as a UsageError (exit 2) naming the storage, password masked."""
    try:
        yield
    except ZooError:
        raise
    except Exception as e:
        import sqlite3

        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(e, (optuna().exceptions.StorageInternalError, SQLAlchemyError, sqlite3.DatabaseError)):
            raise
        cause = e.__cause__ or e.__context__ or e
        first = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UsageError(f"--storage {masked(normalize_url(url))}: the study storage failed ({first}); a SQLite "
                         f"study.db may be corrupt: move it away and run the sweep again") from None


def connect(url: str, heartbeat: int | None = None):
    """An Optuna storage on `url` (heartbeats every `heartbeat` seconds, if given); UsageError (exit 2)
    when it cannot be reached."""
    url = normalize_url(url)
    storage = _rdb_storage(url, heartbeat)
    if url.startswith("sqlite"):
        from sqlalchemy import event

        @event.listens_for(storage.engine, "begin")
        def _begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    # The cached wrapper a Study puts around an RDBStorage: claims made through it are
    # known to the Study that then runs the trial (one storage object for both).
    return optuna().storages.get_storage(storage)


def retrying(fn, *args, attempts=30, **kw):
    """Call a storage operation, retrying while the database is busy (SQLite under load)."""
    busy = optuna().exceptions.StorageInternalError
    for i in range(attempts):
        try:
            return fn(*args, **kw)
        except busy:
            if i == attempts - 1:
                raise
            time.sleep(min(0.05 * 2 ** i, 2.0))


# ----- the study --------------------------------------------------------------------------

def param(value):
    """Optuna's categorical choices are scalars; lists and objects travel as JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def unparam(value, choices):
    """The grid's value that `param` made `value`."""
    for c in choices:
        if param(c) == value:
            return c
    return value


def open_study(storage, name: str, the_plan: Plan, heartbeat: int, log=print, export="best"):
    """Create the study and enqueue the grid, or join the same sweep already there.

    `export` (which runs get exported: best, all, none) is the creator's; a joining process
    follows it. Returns ((study, definition), created). Raises UsageError when the study
    holds another sweep.
    """
    op = optuna()
    try:
        study = op.create_study(storage=storage, study_name=name, direction=the_plan.direction)
    except op.exceptions.DuplicatedStudyError:
        return join_study(storage, name, the_plan.fingerprint), False
    definition = {**the_plan.definition(heartbeat), "export": export}
    study_id = storage.get_study_id_from_name(name)
    study.set_metric_names([the_plan.metric])
    storage.set_study_system_attr(study_id, ATTR, definition)
    for p in the_plan.points:
        params = {k: param(v) for k, v in p.values.items()} | {SEED_KEY: p.seed}
        study.enqueue_trial(params, user_attrs={"zoo:run": p.run, "zoo:spec": p.spec})
    storage.set_study_system_attr(study_id, READY, len(the_plan.points))
    log(f"study {name}: enqueued {len(the_plan.points)} trials")
    return (study, definition), True


def join_study(storage, name: str, fingerprint: str | None = None, wait=READY_TIMEOUT, appear=0):
    """(study, definition) of an existing sweep; waits while its creator enqueues the grid, and
    up to `appear` seconds for the study to exist (a worker started before it was made)."""
    started = time.monotonic()
    while True:
        try:
            study = optuna().load_study(study_name=name, storage=storage)
            break
        except KeyError:
            if time.monotonic() - started >= appear:
                raise UsageError(f"--study {name}: no such study in this storage; "
                                 f"start it with `zoo sweep SPEC --set ...`") from None
            time.sleep(0.2)
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


def trials_in(storage, study_id: int, *states):
    """The study's trials in `states` (the storage's own objects, not copies)."""
    return retrying(storage.get_all_trials, study_id, deepcopy=False, states=states)


def claim_next(storage, study_id: int, order=None):
    """Claim one WAITING trial (WAITING -> RUNNING, won by exactly one process) or return None.

    `order(waiting trials)` says which to try first (default: the grid's order). Returns the
    claimed trial's id. Its heartbeat is recorded just before the claim (Optuna
    judges only RUNNING trials stale, so a beat on a WAITING one is harmless): a worker that
    dies right after claiming leaves a trial that turns stale and is retried, where a trial
    claimed with no beat yet would stay RUNNING forever and keep every worker waiting.
    """
    op = optuna()
    beats = getattr(storage, "get_heartbeat_interval", lambda: None)() is not None
    waiting = trials_in(storage, study_id, op.trial.TrialState.WAITING)
    for trial in order(waiting) if order and waiting else waiting:
        trial_id = retrying(storage.get_trial_id_from_study_id_trial_number, study_id, trial.number)
        if beats:
            retrying(storage.record_heartbeat, trial_id)
        try:
            if retrying(storage.set_trial_state_values, trial_id, state=op.trial.TrialState.RUNNING):
                return trial_id
        except op.exceptions.UpdateFinishedTrialError:
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
        retrying(self.storage.record_heartbeat, self.trial_id)  # (claim_next beat once already)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ----- what the trials' states say ------------------------------------------------------------

def stale(t) -> bool:
    """Failed because its worker stopped beating (a told failure carries zoo:error)."""
    return t.state.name == "FAIL" and "zoo:error" not in t.user_attrs


def will_retry(t) -> bool:
    """A stale trial whose copy runs again (its worker has not died MAX_RETRIES times yet)."""
    return stale(t) and len(t.system_attrs.get("retry_history", [])) < MAX_RETRIES


def retried(trials) -> set:
    """The numbers of the trials that were run again after their worker died."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def awaiting_copy(trials) -> list:
    """Stale trials whose retry copy is not in the study yet: Optuna fails a stale trial, then
    enqueues its copy, and a look in between sees nothing waiting or running. The process that
    failed one adds the copy next; one failed over COPY_SECONDS ago is not waited for."""
    copied, now = retried(trials), datetime.datetime.now()
    return [t for t in trials if will_retry(t) and t.number not in copied and t.datetime_complete is not None
            and (now - t.datetime_complete).total_seconds() < COPY_SECONDS]


def unfinished(trials) -> list:
    """The trials still to run: waiting, running, or stale and awaiting their retry copy."""
    return [t for t in trials if t.state.name in ("WAITING", "RUNNING")] + awaiting_copy(trials)


def final_runs(trials) -> set:
    """Runs whose trial finished for good: completed, or failed and not to be retried."""
    return {t.user_attrs.get("zoo:run") for t in trials if t.state.is_finished() and not will_retry(t)}
