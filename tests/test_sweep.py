"""zoo sweep: the grid, its validation, and real sweeps on SQLite and on a real PostgreSQL.

The sweeps train scikit-learn's digits for one epoch in worker processes of the real
command; the PostgreSQL tests start their own server with initdb/pg_ctl and always
stop it, and skip (saying how to enable them) where the binaries are absent.
"""

import csv
import datetime
import glob
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import DATASETS, SPECS

from zoo.core.errors import SpecError, UsageError
from zoo.spec.keys import key_path
from zoo.sweep.grid import parse_set, plan
from zoo.sweep.study import GRACE_FACTOR, claim_next, connect, masked, normalize_url, open_study

optuna = pytest.importorskip("optuna", reason="zoo sweep needs the sweep extra: pip install -e '.[sweep]'")

DIGITS = SPECS / "digits-mlp.json"
ROOT = SPECS.parent


# ----- the grid (no TensorFlow) -------------------------------------------------------------

def test_set_values_are_json_or_words():
    assert parse_set("train.learning_rate=0.05,0.1") == ("train.learning_rate", [0.05, 0.1])
    assert parse_set("model.hidden[0].units=64,256") == ("model.hidden[0].units", [64, 256])
    assert parse_set("train.optimizer=sgd,adam") == ("train.optimizer", ["sgd", "adam"])
    assert parse_set("model.input_shape=[8,8],[64]") == ("model.input_shape", [[8, 8], [64]])
    assert parse_set("model.use_bias=true,false") == ("model.use_bias", [True, False])
    assert key_path("model.hidden[0].units") == ["model", "hidden", 0, "units"]


@pytest.mark.parametrize("text, words", [
    ("train.learning_rate=", "empty grid"),
    ("train.learning_rate", "KEY=V1,V2"),
    ("=0.1", "KEY=V1,V2"),
    ("train..lr=1", "not a key path"),
    ("[0].units=1", "not a key path"),
    ("train.learning_rate=0.1,0.1", "repeated"),
    ("name=a,b", "cannot be swept"),
    ("train.optimizer=sgd,,adam", "empty grid"),
])
def test_malformed_sets_are_usage_errors(text, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_set(text)


def test_every_combination_is_validated_and_each_problem_named_once():
    with pytest.raises(SpecError) as e:
        plan(DIGITS, ["train.learning_rate=-1,0,0.1", "train.lr=1,2", "model.hidden[0].units=0,8"], "0,1")
    problems = dict(e.value.problems)
    assert problems["train.learning_rate"].startswith("Input should be greater than 0")
    assert problems["train.lr"].startswith("unknown key; valid keys here: optimizer, learning_rate")
    assert "model.hidden[0].units" in problems
    assert len(e.value.problems) == 3
    with pytest.raises(SpecError, match=r"model.hidden\[2\]: out of range: the spec's model.hidden has 1 item"):
        plan(DIGITS, ["model.hidden[2].units=8,16"])
    with pytest.raises(SpecError, match="train.learning_rate: is not an object"):
        plan(DIGITS, ["train.learning_rate.x=1,2"])


def test_plan_names_runs_by_spec_and_hash_and_rejects_conflicts():
    p = plan(DIGITS, ["train.learning_rate=0.05,0.1", "model.hidden[0].units=16,32"], "0,1,2",
             fixed={"train.epochs": 1})
    assert len(p.points) == 12 and len({pt.run for pt in p.points}) == 12
    assert all(pt.run.startswith("digits-mlp-") and len(pt.run) == len("digits-mlp-") + 8 for pt in p.points)
    first = p.points[0]
    assert first.values == {"train.learning_rate": 0.05, "model.hidden[0].units": 16} and first.seed == 0
    assert first.spec["train"] == {**first.spec["train"], "learning_rate": 0.05, "seed": 0, "epochs": 1}
    assert first.spec["model"]["hidden"][0]["units"] == 16 and first.spec["name"] == first.run
    # the same grid gives the same names and study (a repeat reuses), another grid another study
    again = plan(DIGITS, ["train.learning_rate=0.05,0.1", "model.hidden[0].units=16,32"], [0, 1, 2],
                 fixed={"train.epochs": 1})
    assert [pt.run for pt in again.points] == [pt.run for pt in p.points]
    assert again.default_study == p.default_study
    assert plan(DIGITS, ["train.learning_rate=0.05,0.1"], "0,1").default_study != p.default_study
    # a run's name depends on the spec the overrides make, not on how they were spelled
    by_lr = plan(DIGITS, ["train.learning_rate=0.05,0.1"], "0", fixed={"train.epochs": 1})
    by_epochs = plan(DIGITS, ["train.epochs=1,2"], "0", fixed={"train.learning_rate": 0.1})
    assert by_lr.points[1].run == by_epochs.points[0].run
    assert by_lr.points[1].spec == by_epochs.points[0].spec
    with pytest.raises(UsageError, match="nothing to sweep"):
        plan(DIGITS, [], "0")
    with pytest.raises(UsageError, match="--seeds"):
        plan(DIGITS, ["train.seed=1,2"])
    with pytest.raises(UsageError, match="both fixed"):
        plan(DIGITS, ["train.epochs=1,2"], fixed={"train.epochs": 3})
    with pytest.raises(UsageError, match="reports accuracy and loss"):
        plan(DIGITS, ["train.epochs=1,2"], metric="mae")


def test_storage_urls_name_their_driver_and_hide_passwords():
    assert normalize_url("postgresql://u:pw@db/x") == "postgresql+psycopg2://u:pw@db/x"
    assert normalize_url("postgresql+psycopg2://u@db/x") == "postgresql+psycopg2://u@db/x"
    assert normalize_url("mysql://u@db/x") == "mysql+pymysql://u@db/x"
    assert normalize_url("sqlite:///a.db") == "sqlite:///a.db"
    assert masked("postgresql+psycopg2://u:secret@db:5432/x") == "postgresql+psycopg2://u:***@db:5432/x"


# ----- bad input through the real command ----------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--set", "train.lr=0.1,0.2"], "--set: train.lr: unknown key; valid keys here: optimizer"),
    (["--set", "train.learning_rate=0.1,-2"], "--set: train.learning_rate: Input should be greater than 0"),
    (["--set", "train.learning_rate="], "--set train.learning_rate: no values (an empty grid)"),
    ([], "nothing to sweep (an empty grid)"),
    (["--set", "train.learning_rate=0.1,0.2", "--storage", "postgresql://zoo:secret@127.0.0.1:{port}/zoo"],
     "--storage postgresql+psycopg2://zoo:***@127.0.0.1:{port}/zoo: cannot open the study storage"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_runs(zoo, tmp_path, args, words):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [a.format(port=port) for a in args]
    done = zoo("sweep", DIGITS, *args, "--epochs", "1")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words.format(port=port) in lines[0], lines
    assert "secret" not in done.stderr
    assert not (tmp_path / "exports").exists()


def test_a_worker_process_maps_errors_to_exit_codes_like_the_command(tmp_path):
    """`python -m zoo.sweep.worker` (what zoo sweep starts): a ZooError is one line and its exit code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZOO_SWEEP_STORAGE": f"sqlite:///{tmp_path / 'w.db'}"}
    done = subprocess.run([sys.executable, "-m", "zoo.sweep.worker", "--study", "nope"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["Error: --study nope: no such study in this storage; "
                                                "start it with `zoo sweep SPEC --set ...`"]


def test_every_worker_stopping_with_trials_left_is_exit_11(tmp_path):
    """Workers that cannot start (here: a Keras backend that does not exist) end the sweep with SweepError."""
    env = {**sweep_env(tmp_path), "KERAS_BACKEND": "bogus"}
    done = subprocess.run([sys.executable, "-m", "zoo", "sweep", str(DIGITS), "--set", "train.learning_rate=0.05,0.1",
                           "--epochs", "1", "--workers", "2"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 11, done.stdout + done.stderr
    assert done.stdout.count(" exited with 2; its trial goes back to the others") == 2, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: every worker stopped with 2 trial(s) unfinished"), lines
    logs = list((tmp_path / "exports" / "sweeps").glob("*/logs/worker-*.log"))
    assert len(logs) == 2 and all("KERAS_BACKEND='bogus'" in log.read_text() for log in logs)


# ----- claims: no trial twice, even when workers race ---------------------------------------

CLAIMER = """
import json, sys
from zoo.sweep.grid import plan
from zoo.sweep.study import claim_next, connect, open_study
storage = connect(sys.argv[1])  # on SQLite a new file: every process creates Optuna's tables at once
grid = plan(sys.argv[2], ["train.learning_rate=" + ",".join(str((i + 1) / 100) for i in range(int(sys.argv[3])))])
(study, definition), created = open_study(storage, "race", grid, 10, log=lambda m: None)
study_id = storage.get_study_id_from_name("race")
got = []
while (trial_id := claim_next(storage, study_id)) is not None:
    got.append(trial_id)
print(json.dumps({"created": created, "claimed": got}))
"""


def race(url, processes=3, trials=40):
    """Processes start one sweep at once: one enqueues the grid, the others join; each trial goes to one."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, str(DIGITS), str(trials)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    results = [json.loads(out) for out, _ in outs]
    assert sum(r["created"] for r in results) == 1
    every = [t for r in results for t in r["claimed"]]
    assert len(every) == trials and len(set(every)) == trials, [len(r["claimed"]) for r in results]
    assert len(trials_of(url, "race")) == trials  # the grid enqueued once


def test_racing_workers_on_sqlite_enqueue_once_and_claim_each_trial_once(tmp_path):
    # Optuna's own SQLite storage hands some trials to two of these processes
    # (pysqlite begins a transaction only at its first write); zoo.sweep.study.connect does not.
    race(f"sqlite:///{tmp_path / 'race.db'}")


def test_a_worker_dead_right_after_its_claim_leaves_a_trial_that_is_retried(tmp_path):
    """Killed between the claim and its first heartbeat thread's beat: the trial still turns
    stale (claim_next beats before claiming) and is failed and enqueued again, rather than
    staying RUNNING forever with every other worker waiting on it."""
    url = f"sqlite:///{tmp_path / 'dead.db'}"
    storage = connect(url, heartbeat=1)
    grid = plan(DIGITS, ["train.learning_rate=0.1"])
    (study, _), _ = open_study(storage, "dead", grid, 1, log=lambda m: None)
    study_id = storage.get_study_id_from_name("dead")
    claimed = claim_next(storage, study_id)  # ... and this "worker" dies here
    assert claimed is not None and claim_next(storage, study_id) is None
    time.sleep(1 * GRACE_FACTOR + 1.5)  # past the grace period
    optuna.storages.fail_stale_trials(study)  # what the next worker does first
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"], trials
    assert trials[1].user_attrs["zoo:run"] == trials[0].user_attrs["zoo:run"]


def test_a_stale_trial_is_awaited_until_its_retry_copy_is_in_the_study(tmp_path):
    """Optuna fails a stale trial, then enqueues its copy: a look in between sees nothing
    waiting or running, and the sweep once ended there, its retried trial left unshown."""
    from zoo.sweep.study import awaiting_copy

    storage = connect(f"sqlite:///{tmp_path / 'copy.db'}", heartbeat=1)
    (study, _), _ = open_study(storage, "copy", plan(DIGITS, ["train.learning_rate=0.1"]), 1, log=lambda m: None)
    trial_id = claim_next(storage, storage.get_study_id_from_name("copy"))
    storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)  # what fail_stale_trials does first
    failed = study.get_trials(deepcopy=False)
    assert [t.number for t in awaiting_copy(failed)] == [0]
    storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(trial_id))  # ... and then
    assert awaiting_copy(study.get_trials(deepcopy=False)) == []
    for t in failed:  # one failed long ago is not waited for (its failer died before the copy)
        t.datetime_complete -= datetime.timedelta(seconds=60)
    assert awaiting_copy(failed) == []


# ----- real sweeps ------------------------------------------------------------------------

def sweep_env(tmp_path):
    return {**os.environ, "ZOO_OUT": str(tmp_path / "exports"), "ZOO_DATA_DIR": str(DATASETS),
            "PYTHONPATH": str(ROOT), "ZOO_SWEEP_STORAGE": ""}


def run_sweep(tmp_path, *args, timeout=240):
    return subprocess.run([sys.executable, "-m", "zoo", "sweep", str(DIGITS), *map(str, args)], capture_output=True,
                          text=True, env=sweep_env(tmp_path), cwd=tmp_path, timeout=timeout, stdin=subprocess.DEVNULL)


def trials_of(url, study):
    return optuna.load_study(study_name=study, storage=connect(url)).get_trials(deepcopy=False)


def completed_once(trials, expected_runs):
    complete = [t.user_attrs["zoo:run"] for t in trials if t.state.name == "COMPLETE"]
    assert sorted(complete) == sorted(expected_runs), complete


def check_results(folder: Path, the_plan, out: Path, failing=(), exported="best"):
    """results.csv, summary.csv and results.md against the runs' own metrics.json; the runs
    exported and verified as --export says (best: only the best run, with its plots)."""
    rows = {r["run"]: r for r in csv.DictReader(open(folder / "results.csv"))}
    assert list(rows) == [p.run for p in the_plan.points]
    by_combo = {}
    for p in the_plan.points:
        row = rows[p.run]
        assert float(row["train.learning_rate"]) == p.values["train.learning_rate"] and int(row["seed"]) == p.seed
        if p.values["train.learning_rate"] in failing:
            assert row["state"] == "fail" and "TrainingError: loss became nan" in row["error"], row
            assert not (out / p.run / "metrics.json").exists()
            continue
        metrics = json.loads((out / p.run / "metrics.json").read_text())
        assert row["state"] == "complete" and Path(row["run_dir"]) == out / p.run
        assert float(row["test_accuracy"]) == metrics["test"]["accuracy"]
        assert float(row["test_loss"]) == metrics["test"]["loss"]
        assert float(row["train_seconds"]) == metrics["wall_seconds"]
        other = float(row["other_seconds"])  # build, data, writes: the trial's seconds not in its epochs
        assert 0 < other and other == pytest.approx(float(row["trial_seconds"]) - metrics["wall_seconds"], abs=2e-3)
        assert json.loads((out / p.run / "spec.json").read_text()) == p.spec
        by_combo.setdefault(p.values["train.learning_rate"], []).append(metrics["test"]["accuracy"])
    summary = {float(r["train.learning_rate"]): r for r in csv.DictReader(open(folder / "summary.csv"))}
    for lr, accs in by_combo.items():
        assert float(summary[lr]["accuracy_mean"]) == pytest.approx(statistics.fmean(accs))
        assert float(summary[lr]["accuracy_std"]) == pytest.approx(statistics.stdev(accs) if len(accs) > 1 else 0)
    best_lr = max(by_combo, key=lambda lr: statistics.fmean(by_combo[lr]))
    best_run = max((p for p in the_plan.points if p.values["train.learning_rate"] == best_lr),
                   key=lambda p: json.loads((out / p.run / "metrics.json").read_text())["test"]["accuracy"])
    for p in the_plan.points:
        if p.values["train.learning_rate"] in failing:
            continue
        if exported == "all" or (exported == "best" and p.run == best_run.run):
            assert json.loads((out / p.run / "verify.json").read_text())["status"] == "passed"
            assert (out / p.run / "curves.png").is_file() and (out / p.run / "card.md").is_file()
        else:  # trained only: metrics, history and model
            assert not (out / p.run / "model.onnx").exists() and not (out / p.run / "curves.png").exists()
            assert (out / p.run / "history.json").is_file() and (out / p.run / "model.keras").is_file()
    md = (folder / "results.md").read_text()
    mean = statistics.fmean(by_combo[best_lr])
    assert f"Best: train.learning_rate={best_lr}: test accuracy {mean:.4f}" in md
    assert f"its best run: {out / best_run.run} (seed {best_run.seed}" in md
    assert (folder / "sweep.png").stat().st_size > 1000
    return md


def start_sweep(tmp_path, *args):
    return subprocess.Popen([sys.executable, "-m", "zoo", "sweep", str(DIGITS), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sweep_env(tmp_path),
                            cwd=tmp_path, stdin=subprocess.DEVNULL)


def kill_a_worker_mid_trial(proc, url, study, which=lambda spec: True, timeout=180):
    """SIGKILL the worker of the first running trial whose spec `which` accepts: (trial number, pid)."""
    db = Path(url[len("sqlite:///"):])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if not db.exists():
            continue
        try:
            trials = trials_of(url, study)
        except (KeyError, optuna.exceptions.StorageInternalError):  # the study is being made
            continue
        for t in trials:
            if t.state.name == "RUNNING" and "zoo:worker" in t.user_attrs and which(t.user_attrs["zoo:spec"]):
                pid = int(t.user_attrs["zoo:worker"].rsplit(":", 1)[1])
                os.kill(pid, signal.SIGKILL)
                return t.number, pid
    raise AssertionError("no trial ever ran")


@pytest.mark.slow
def test_sqlite_sweep_with_two_workers_one_killed_mid_trial(tmp_path):
    """Every combination once, a diverging trial failed, a SIGKILLed worker's trial retried, the tables right."""
    grid = ["--set", "train.learning_rate=0.05,0.2,1e20", "--seeds", "0,1", "--epochs", "1"]
    the_plan = plan(DIGITS, ["train.learning_rate=0.05,0.2,1e20"], "0,1", fixed={"train.epochs": 1})
    study, out = the_plan.default_study, tmp_path / "exports"
    folder = out / "sweeps" / study
    url = f"sqlite:///{folder / 'study.db'}"
    proc = start_sweep(tmp_path, *grid, "--workers", "2", "--heartbeat", "1")
    try:
        number, pid = kill_a_worker_mid_trial(proc, url, study, lambda spec: spec["train"]["learning_rate"] < 1)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    assert f"worker pid {pid} was killed by signal 9" in stdout
    assert stdout.count("] digits-mlp-") == 6  # one progress line per combination
    trials = trials_of(url, study)
    assert len(trials) == 7  # the six combinations, and the killed one's retry
    killed = next(t for t in trials if t.number == number)
    assert killed.state.name == "FAIL"  # failed as stale by the other worker ...
    retry = [t for t in trials if number in t.system_attrs.get("retry_history", [])]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"  # ... and run again, once
    assert retry[0].user_attrs["zoo:run"] == killed.user_attrs["zoo:run"]
    # every combination exactly once; the diverging ones told FAIL, and the sweep went on
    completed_once(trials, [p.run for p in the_plan.points if p.values["train.learning_rate"] != 1e20])
    assert sorted(t.user_attrs["zoo:run"] for t in trials if "zoo:error" in t.user_attrs) == sorted(
        p.run for p in the_plan.points if p.values["train.learning_rate"] == 1e20)
    assert len(list((folder / "logs").glob("worker-*.log"))) == 2
    md = check_results(folder, the_plan, out, failing=(1e20,))
    assert md in stdout and "2 trial(s) failed; 1 retried after their worker died" in md
    assert sorted(re.findall(r"^\[(\d)/6\]", stdout, re.M)) == list("123456")  # each line counts one more
    assert "exported the best run" in stdout

    # the status of the finished sweep
    status = subprocess.run([sys.executable, "-m", "zoo", "sweep", "--status", "--study", study], capture_output=True,
                            text=True, env=sweep_env(tmp_path), cwd=tmp_path, timeout=60)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{study}: 6/6 trials finished (4 complete, 2 fail)")

    # a repeat runs nothing; a new study with the same points reuses the finished runs
    ok = [p for p in the_plan.points if p.values["train.learning_rate"] != 1e20]
    stamps = {p.run: (out / p.run / "model.keras").stat().st_mtime_ns for p in ok}
    again = run_sweep(tmp_path, *grid)
    assert again.returncode == 0, again.stderr
    assert "] digits-mlp-" not in again.stdout and len(trials_of(url, study)) == 7
    fresh = run_sweep(tmp_path, "--set", "train.learning_rate=0.05,0.2", "--seeds", "0,1", "--epochs", "1",
                      "--study", "again", "--workers", "2")
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.count("(reused)") == 2 * 4  # progress lines and the table
    assert {p.run: (out / p.run / "model.keras").stat().st_mtime_ns for p in ok} == stamps

    # a run edited by hand fails its provenance check: trained again, not reused
    edited = next(p for p in ok if p.values["train.learning_rate"] == 0.05 and p.seed == 0)
    metrics = json.loads((out / edited.run / "metrics.json").read_text())
    metrics["test"]["accuracy"] = 1.0
    (out / edited.run / "metrics.json").write_text(json.dumps(metrics))
    third = run_sweep(tmp_path, "--set", "train.learning_rate=0.05", "--seeds", "0,1", "--epochs", "1",
                      "--study", "edited")
    assert third.returncode == 0, third.stderr
    assert third.stdout.count("(reused)") == 2  # the untouched seed's progress line and table row
    assert (out / edited.run / "model.keras").stat().st_mtime_ns != stamps[edited.run]
    assert json.loads((out / edited.run / "metrics.json").read_text())["test"]["accuracy"] < 1.0


# ----- a real PostgreSQL --------------------------------------------------------------------

def _pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on a free port of 127.0.0.1; yields its URL; always stopped."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("needs PostgreSQL's initdb and pg_ctl (/usr/lib/postgresql/<ver>/bin); install Debian's "
                    "postgresql package (.ci/setup-postgres.sh does) to run it")
    pytest.importorskip("psycopg2", reason="needs psycopg2: pip install -e '.[sweep]'")
    as_root = os.geteuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="zoo-pg-"))  # not under pytest's 0700 tmp: user postgres must reach it
    if as_root:
        shutil.chown(folder, "postgres", "postgres")

    def pg(*cmd, check=True):
        cmd = [str(bin_dir / cmd[0]), *cmd[1:]]
        if as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60, cwd=folder)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = False
    try:
        pg("initdb", "-D", f"{folder}/data", "-U", "zoo", "--auth=trust", "--no-sync", "-E", "UTF8")
        pg("pg_ctl", "-D", f"{folder}/data", "-l", f"{folder}/log", "-w", "-t", "60",
           "-o", f"-p {port} -h 127.0.0.1 -k {folder} -F", "start")
        started = True
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "zoo", "sweeps")
        yield f"postgresql://zoo@127.0.0.1:{port}/sweeps"
    finally:
        if started:
            pg("pg_ctl", "-D", f"{folder}/data", "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_racing_workers_on_postgresql_enqueue_once_and_claim_each_trial_once(postgres):
    race(postgres)


@pytest.mark.slow
def test_postgresql_sweep_with_two_workers(tmp_path, postgres):
    the_plan = plan(DIGITS, ["train.learning_rate=0.05,0.2"], "0", fixed={"train.epochs": 1})
    done = run_sweep(tmp_path, "--set", "train.learning_rate=0.05,0.2", "--epochs", "1", "--workers", "2",
                     "--storage", postgres, "--study", "pg")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "in postgresql+psycopg2://zoo@127.0.0.1" in done.stdout
    out = tmp_path / "exports"
    completed_once(trials_of(postgres, "pg"), [p.run for p in the_plan.points])
    check_results(out / "sweeps" / "pg", the_plan, out)
    assert not (out / "sweeps" / "pg" / "study.db").exists()
    # a second machine running the same command joins the finished sweep; another grid is refused
    status = subprocess.run([sys.executable, "-m", "zoo", "sweep", "--status", "--storage", postgres],
                            capture_output=True, text=True, env=sweep_env(tmp_path), cwd=tmp_path, timeout=60)
    assert status.returncode == 0 and "pg: 2/2 trials finished (2 complete)" in status.stdout, status.stderr
    other = run_sweep(tmp_path, "--set", "train.learning_rate=0.05,0.3", "--epochs", "1", "--storage", postgres,
                      "--study", "pg")
    assert other.returncode == 2 and "study pg holds another sweep" in other.stderr, other.stderr


@pytest.mark.slow
def test_export_all_exports_and_verifies_every_trial_as_zoo_run_does(tmp_path):
    the_plan = plan(DIGITS, ["train.learning_rate=0.05,0.2"], "0", fixed={"train.epochs": 1})
    done = run_sweep(tmp_path, "--set", "train.learning_rate=0.05,0.2", "--epochs", "1", "--export", "all")
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "exports"
    check_results(out / "sweeps" / the_plan.default_study, the_plan, out, exported="all")
    assert "exported the best run" not in done.stdout
    # the same grid with the default --export best reuses the exported runs (no training)
    again = run_sweep(tmp_path, "--set", "train.learning_rate=0.05,0.2", "--epochs", "1", "--study", "again")
    assert again.returncode == 0 and again.stdout.count("(reused)") == 2 * 2, again.stdout
    assert "is exported and verified" in again.stdout


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_its_workers_with_143(tmp_path):
    """A scheduler cancelling the job: one line, exit 143 as everywhere in zoo, no worker left behind."""
    proc = start_sweep(tmp_path, "--set", "train.learning_rate=0.05,0.1", "--seeds", "0", "--epochs", "200",
                       "--workers", "1")
    logs = tmp_path / "exports" / "sweeps"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not list(logs.glob("*/logs/*")):
            time.sleep(0.2)
        time.sleep(1.0)  # the worker is starting or training
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: terminated (SIGTERM)"), stderr
    leftover = subprocess.run(["pgrep", "-f", "--", f"--out {tmp_path / 'exports'}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "a worker outlived the sweep"
