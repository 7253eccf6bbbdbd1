"""Faults: SIGKILL mid-run, two processes on one run, unwritable output, hostile model files.

(a) `zoo train` and `zoo export` are SIGKILLed at eight points: three polled from
    outside (start-up, the first file, three epochs in) and five injected exactly (a
    wrapper around os.fsync truncates the temporary file to half and SIGKILLs the
    process: mid-checkpoint, mid-history.json, mid-model.keras, mid-model.onnx,
    mid-test data). After each the run holds no half-written file (every .json
    parses, every .keras loads with safe_mode, model.onnx passes onnx.checker), and
    `--resume` or a rerun finishes with the same weights as an uninterrupted run.
(b) A second `zoo train` or a `zoo export` on a run being trained exits 7 at once;
    a lock left by a killed process blocks nothing.
(c) An output folder that cannot be written, or a file-size limit hit mid-write
    (the disk-full case), is one clear line and no half-written file.
(d) A .keras file carrying code (a Lambda layer, a config naming os.system) is
    refused; a spec cannot name a Python object; run names cannot leave the runs folder.

Temporary files: every artefact is written to `.NAME.XXXXXXXX.tmpSUFFIX` beside it and
renamed into place, so SIGKILL can leave one behind. That is acceptable because no
glob zoo uses matches a dot file and the next zoo command on the run (it takes the
lock, so no live writer exists) removes them; both are checked.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DATASETS, SPECS, spec_dict, write_spec

from zoo.core import runs
from zoo.core.errors import RunLockedError, SpecError, UsageError
from zoo.spec import validate

EPOCHS = 30
TMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp(prefix=".NAME.", suffix=".tmp...")


def fault_spec() -> dict:
    """digits-mlp (1,438 examples, no download), 256 hidden units, 30 epochs of ~0.1 s."""
    spec = spec_dict("digits-mlp")
    spec["name"] = "faults"
    spec["model"]["hidden"] = [{"units": 256}]
    spec["train"]["epochs"] = EPOCHS
    return spec


# ----- running zoo in the background ------------------------------------------------------

# Runs `zoo` with os.fsync wrapped: at the NTH fsync of a file whose name matches
# $ZOO_TEST_KILL_AT (zoo fsyncs each temporary file once it is written, before renaming
# it into place) it cuts the file to half its size, as a crash mid-write would, and
# SIGKILLs its own process. A deterministic kill point where polling would race.
HARNESS = r"""
import os, re, runpy, signal, sys
pattern, nth, seen = re.compile(os.environ["ZOO_TEST_KILL_AT"]), int(os.environ.get("ZOO_TEST_KILL_NTH", "1")), [0]
real_fsync = os.fsync
def fsync(fd):
    path = os.readlink(f"/proc/self/fd/{fd}")
    if pattern.search(os.path.basename(path)):
        seen[0] += 1
        if seen[0] == nth:
            os.truncate(path, os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    return real_fsync(fd)
os.fsync = fsync
sys.argv = ["zoo", *sys.argv[1:]]
runpy.run_module("zoo", run_name="__main__", alter_sys=True)
"""


class Zoo:
    """Start `python -m zoo ...` with runs under `out`; output goes to files, not pipes."""

    def __init__(self, tmp_path: Path, out: Path):
        self.tmp_path, self.out, self.count = tmp_path, out, 0

    def env(self, extra=None):
        return {**os.environ, "ZOO_OUT": str(self.out), "ZOO_DATA_DIR": str(DATASETS), "ZOO_SPECS": str(SPECS),
                "TF_CPP_MIN_LOG_LEVEL": "3", **(extra or {})}

    def start(self, *args, env=None, preexec_fn=None, kill_at=None, nth=1):
        self.count += 1
        log = self.tmp_path / f"zoo-{self.count}.log"
        if kill_at:
            cmd = [sys.executable, "-c", HARNESS]
            env = {**(env or {}), "ZOO_TEST_KILL_AT": kill_at, "ZOO_TEST_KILL_NTH": str(nth)}
        else:
            cmd = [sys.executable, "-m", "zoo"]
        proc = subprocess.Popen([*cmd, *map(str, args)], env=self.env(env), cwd=self.tmp_path,
                                stdin=subprocess.DEVNULL, stdout=open(log, "w"), stderr=open(f"{log}.err", "w"),
                                preexec_fn=preexec_fn)
        proc.log = log
        return proc

    def run(self, *args, timeout=300, **kw):
        proc = self.start(*args, **kw)
        proc.wait(timeout)
        return finished(proc)

    def killed_at(self, *args, kill_at, nth=1):
        """Run until the kill point; it must be reached (exit by SIGKILL)."""
        done = self.run(*args, kill_at=kill_at, nth=nth)
        assert done.returncode == -signal.SIGKILL, \
            f"kill point {kill_at} #{nth} never reached (exit {done.returncode}):\n{done.stderr_text[-2000:]}"
        return done


def finished(proc):
    proc.stdout_text = proc.log.read_text()
    proc.stderr_text = Path(f"{proc.log}.err").read_text()
    return proc


def wait_for(condition, proc, timeout=120, what=""):
    """Poll `condition()` every ~0.5 ms; fail if `proc` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            finished(proc)
            pytest.fail(f"zoo exited ({proc.returncode}) before {what}:\n{proc.stdout_text[-2000:]}{proc.stderr_text[-2000:]}")
        time.sleep(0.0005)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def sigkill(proc):
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def history_length(run: Path) -> int:
    try:
        return len(json.loads((run / "history.json").read_text()))
    except (FileNotFoundError, ValueError):  # ValueError would be a torn write: assert_intact catches it
        return -1


def leftovers(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if TMP.match(p.name)) if run.exists() else []


def quiet_keras():
    from zoo.core.backend import import_keras

    return import_keras()  # without TensorFlow's start-up lines on stderr


def assert_intact(run: Path) -> list[str]:
    """No half-written file in the run. Returns the names of leftover temporary files."""
    import onnx

    keras = quiet_keras()

    if not run.exists():
        return []
    for path in run.rglob("*"):
        if TMP.match(path.name) or path.is_dir():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())  # a torn write would not parse
        elif path.suffix == ".keras":
            keras.saving.load_model(path, safe_mode=True)
        elif path.suffix == ".onnx":
            onnx.checker.check_model(str(path), full_check=True)
        elif path.suffix == ".pb":
            onnx.TensorProto().ParseFromString(path.read_bytes())
        elif path.suffix == ".png":
            from PIL import Image

            Image.open(path).verify()
        elif path.suffix == ".md":
            assert path.read_text().startswith("# ")
    history = run / "history.json"
    if history.exists():
        records = json.loads(history.read_text())
        assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
        if records:  # --resume needs the checkpoint of the last committed epoch
            assert (run / "checkpoints" / f"epoch-{len(records):04d}.keras").is_file()
    # zoo's own globs never take a temporary file for an artefact
    assert not [p for p in run.glob("checkpoints/epoch-*.keras") if TMP.match(p.name)]
    return leftovers(run)


def weights(path: Path):
    import keras

    return [np.asarray(w) for w in keras.saving.load_model(path, safe_mode=True).get_weights()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The fault spec trained without a break, exported and verified (`zoo run`).

    While it trains it is stopped (SIGSTOP, the lock held) and a second `zoo train` and
    a `zoo export` are started on the same run; their results are kept for
    test_second_process_on_a_busy_run_exits_7.
    """
    tmp_path = tmp_path_factory.mktemp("reference")
    zoo = Zoo(tmp_path, tmp_path / "exports")
    spec_file = write_spec(tmp_path, fault_spec())
    run = tmp_path / "exports" / "faults"
    first = zoo.start("run", spec_file)
    wait_for(lambda: history_length(run) >= 1, first, what="the first epoch")
    first.send_signal(signal.SIGSTOP)
    try:
        others = [zoo.start("train", spec_file), zoo.start("export", run)]
        for proc in others:
            proc.wait(120)
            finished(proc)
        lock_owner = (run / ".lock").read_text()
    finally:
        first.send_signal(signal.SIGCONT)
    first.wait(300)
    finished(first)
    assert first.returncode == 0, first.stderr_text
    BUSY.update(others=others, first_pid=first.pid, lock_owner=lock_owner)
    return run


BUSY = {}  # what the reference fixture saw of the processes it started beside its own


# ----- (a) SIGKILL ------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_during_train_then_resume(tmp_path, reference):
    zoo = Zoo(tmp_path, tmp_path / "exports")
    spec_file = write_spec(tmp_path, fault_spec())
    run = tmp_path / "exports" / "faults"
    report = {}

    # 1. right after start: Python and TensorFlow still importing
    proc = zoo.start("train", spec_file)
    time.sleep(0.3)
    sigkill(proc)
    report["1 startup"] = assert_intact(run)

    # 2. the first file of a fresh run appears (history.json = []), before epoch 1
    proc = zoo.start("train", spec_file)
    wait_for(lambda: (run / "history.json").exists(), proc, what="history.json")
    sigkill(proc)
    report["2 before epoch 1"] = assert_intact(run)

    # 3. after three committed epochs (polled from outside: a real, racy SIGKILL)
    proc = zoo.start("train", spec_file)
    wait_for(lambda: history_length(run) >= 3, proc, what="3 epochs")
    sigkill(proc)
    report["3 after >=3 epochs"] = assert_intact(run)
    committed = history_length(run)
    assert committed >= 3
    assert (run / ".lock").read_text() == str(proc.pid)  # the dead process's lock file stays, and blocks nobody:

    # 4. mid-way through writing the checkpoint of the second epoch after the resume
    zoo.killed_at("train", run, "--resume", kill_at=r"^\.epoch-\d+\.keras\.", nth=2)
    report["4 checkpoint write"] = assert_intact(run)
    assert history_length(run) == committed + 1

    # 5. after an epoch's checkpoint, mid-way through the history.json that commits it
    zoo.killed_at("train", spec_file, "--resume", kill_at=r"^\.history\.json\.", nth=3)
    report["5 history commit"] = assert_intact(run)
    assert history_length(run) == committed + 3

    # 6. after the last epoch, mid-way through model.keras
    zoo.killed_at("train", spec_file, "--resume", kill_at=r"^\.model\.keras\.")
    report["6 model.keras write"] = assert_intact(run)
    assert history_length(run) == EPOCHS and not (run / "model.keras").exists()

    # a live process that does not hold the lock (this one) named in .lock: no matter
    (run / ".lock").write_text(str(os.getpid()))
    done = zoo.run("train", run, "--resume")
    assert done.returncode == 0, done.stderr_text
    print("\nleft-over temporary files after each SIGKILL:", json.dumps(report, indent=1))
    assert assert_intact(run) == [], "the next command on the run should remove stale temporary files"
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS
    # nothing lost: killed and resumed five times, the model is the uninterrupted one
    for got, want in zip(weights(run / "model.keras"), weights(reference / "model.keras")):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    reference_metrics = json.loads((reference / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(reference_metrics["test"]["accuracy"], abs=1e-6)


def _trained_unexported_copy(reference, run):
    """The reference run as it was before `zoo export`: trained, with no export artefacts."""
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns("model.onnx", "verify.json", "card.md",
                                                                    "test_data_set_0", ".lock"))
    return run


@pytest.mark.slow
def test_sigkill_during_export_then_rerun(tmp_path, reference):
    out = tmp_path / "exports"
    run = _trained_unexported_copy(reference, out / "faults")
    zoo = Zoo(tmp_path, out)
    report = {}

    # 7. mid-way through writing model.onnx
    zoo.killed_at("export", run, kill_at=r"^\.model\.onnx\.")
    report["7 model.onnx write"] = assert_intact(run)
    assert not (run / "model.onnx").exists()

    # 8. during verification, mid-way through test_data_set_0/output_0.pb
    zoo.killed_at("export", run, kill_at=r"^\.output_0\.pb\.")
    report["8 test data write"] = assert_intact(run)
    assert (run / "model.onnx").exists() and (run / "verify.json").exists()

    done = zoo.run("export", run)
    assert done.returncode == 0, done.stderr_text
    print("\nleft-over temporary files after each SIGKILL:", json.dumps(report, indent=1))
    assert assert_intact(run) == [], "the next command on the run should remove stale temporary files"
    assert json.loads((run / "verify.json").read_text())["status"] == "passed"
    assert sorted(p.name for p in (run / "test_data_set_0").iterdir()) == ["input_0.pb", "output_0.pb", "output_1.pb"]


# ----- (b) two processes, one run ---------------------------------------------------------

@pytest.mark.slow
def test_second_process_on_a_busy_run_exits_7(reference):
    """`reference` stopped its `zoo run` mid-training and started `zoo train` and `zoo export` beside it."""
    assert BUSY["lock_owner"] == str(BUSY["first_pid"])
    for proc in BUSY["others"]:
        assert proc.returncode == 7, proc.stderr_text
        assert_one_error_line(proc.stderr_text, f"another zoo process (pid {BUSY['first_pid']})", str(reference))
    # the first finished untouched: every epoch once, exported, verified
    assert assert_intact(reference) == []
    assert [r["epoch"] for r in json.loads((reference / "history.json").read_text())] == list(range(1, EPOCHS + 1))
    assert json.loads((reference / "verify.json").read_text())["status"] == "passed"


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    """flock dies with its process: a SIGKILLed holder leaves a .lock file but no lock."""
    run = tmp_path / "run"
    code = f"import time; from pathlib import Path; from zoo.core import runs\nwith runs.locked(Path({str(run)!r})):\n" \
           f"    print('locked', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        with runs.locked(run):
            pass
    sigkill(holder)
    assert (run / ".lock").read_text() == str(holder.pid)
    with runs.locked(run):
        assert (run / ".lock").read_text() == str(os.getpid())


def test_taking_the_lock_removes_stale_temporary_files_only(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "spec.json").write_text("{}")
    stale = [run / ".model.keras.ab_12xyz.tmp.keras", run / "checkpoints" / ".epoch-0003.keras.q1w2e3r4.tmp.keras"]
    kept = [run / ".latest", run / "notes.tmp", run / ".model.keras.short.tmp", run / "checkpoints" / "epoch-0003.keras"]
    for p in stale + kept:
        p.write_text("x")
    elsewhere = tmp_path / "not-a-run"  # `zoo verify some/dir/x.onnx` locks some/dir: nothing is removed there
    elsewhere.mkdir()
    (elsewhere / ".photo.jpg.abcdefgh.tmp.jpg").write_text("x")
    with runs.locked(run), runs.locked(elsewhere):
        assert [p for p in stale if p.exists()] == []
        assert all(p.exists() for p in kept)
        assert (elsewhere / ".photo.jpg.abcdefgh.tmp.jpg").exists()


# ----- (c) an output folder that cannot be written ----------------------------------------

def schema_to(path):
    return CliRunner().invoke(main_cli(), ["schema", "--out", str(path)])


def main_cli():
    from zoo.cli import main

    return main


def assert_one_error_line(stderr, *words):
    lines = stderr.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("where", ["under_a_file", "sysfs", "chmod_500"])
def test_unwritable_output_folder_in_process(tmp_path, where):
    if where == "under_a_file":
        (tmp_path / "file").write_text("x")
        target, words = tmp_path / "file" / "out" / "schema.json", ["cannot write", "Not a directory"]
    elif where == "sysfs":
        target, words = Path("/sys/zoo-test/schema.json"), ["cannot write", "nothing was changed"]
        try:
            os.mkdir(target.parent)
            os.rmdir(target.parent)
            pytest.skip("/sys is writable here")
        except OSError:
            pass
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        probe = folder / "probe"
        try:
            probe.write_text("x")
            probe.unlink()
            pytest.skip("chmod 0o500 does not stop this user (root): covered by under_a_file and sysfs")
        except PermissionError:
            pass
        target, words = folder / "schema.json", ["cannot write", "permission denied"]
    result = schema_to(target)
    # Not a directory is the arguments' fault (2); permission denied is the environment's (9)
    assert result.exit_code == (2 if where == "under_a_file" else 9), result.output
    assert_one_error_line(result.stderr, str(target), *words)
    assert not target.exists()


@pytest.mark.slow
def test_train_into_an_unwritable_output_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "exports"
    done = Zoo(tmp_path, out).run("train", write_spec(tmp_path, fault_spec()))
    assert done.returncode == 2, done.stderr_text
    assert_one_error_line(done.stderr_text, "cannot write", "Not a directory")


def _file_size_limit(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail with EFBIG
    return apply


@pytest.mark.slow
def test_file_size_limit_hit_while_writing_a_checkpoint(tmp_path):
    """The disk-full case without a disk: RLIMIT_FSIZE makes the first checkpoint's write fail."""
    zoo = Zoo(tmp_path, tmp_path / "exports")
    run = tmp_path / "exports" / "faults"
    done = zoo.run("train", write_spec(tmp_path, fault_spec()), preexec_fn=_file_size_limit(20_000))
    assert done.returncode == 9, (done.returncode, done.stderr_text)
    assert_one_error_line(done.stderr_text, "epoch-0001.keras", "cannot write", "File too large")
    assert assert_intact(run) == []  # the temporary file was removed, not left half-written
    assert json.loads((run / "history.json").read_text()) == []
    assert not list((run / "checkpoints").glob("*"))


@pytest.mark.slow
def test_file_size_limit_hit_while_writing_model_onnx(tmp_path, reference):
    out = tmp_path / "exports"
    run = _trained_unexported_copy(reference, out / "faults")
    limit = (reference / "model.onnx").stat().st_size // 2
    done = Zoo(tmp_path, out).run("export", run, preexec_fn=_file_size_limit(limit))
    assert done.returncode == 9, (done.returncode, done.stderr_text)
    assert_one_error_line(done.stderr_text, "model.onnx", "File too large")
    assert assert_intact(run) == []
    assert not (run / "model.onnx").exists()


# ----- (d) untrusted files ----------------------------------------------------------------

@pytest.fixture(scope="module")
def lambda_keras(tmp_path_factory):
    """A .keras file whose Lambda layer would create `sentinel` when run."""
    keras = quiet_keras()

    folder = tmp_path_factory.mktemp("lambda")
    sentinel = folder / "pwned"
    target = str(sentinel)  # a str: keras serializes the lambda's closure
    inputs = keras.Input((8, 8), name="input")
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: (open(target, "w").close(), t)[1], name="evil")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    path = folder / "lambda.keras"
    model.save(path)
    sentinel.unlink(missing_ok=True)  # building the model ran the lambda once; loading must not
    return path, sentinel


def test_load_checkpoint_refuses_a_lambda(lambda_keras):
    from zoo.stages.build import load_model as load_checkpoint

    path, sentinel = lambda_keras
    with pytest.raises(UsageError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "refused" in str(e.value) and "Lambda" in str(e.value)
    assert not sentinel.exists()


def _tampered(reference: Path, folder: Path, name, mutate) -> Path:
    """reference's model.keras with its config.json changed by `mutate`."""
    path = folder / f"{name}.keras"
    with zipfile.ZipFile(reference / "model.keras") as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                mutate(config)
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    return path


def _os_system_activation(config):
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dense":
            layer["config"]["activation"] = {"module": "os", "class_name": "function", "config": "system",
                                             "registered_name": "function"}


def _popen_layer(config):
    config["config"]["layers"][-1].update(module="subprocess", class_name="Popen", registered_name="Popen")


def _eval_model(config):
    config.update(module="builtins", class_name="eval", registered_name="eval")


def _lambda_in_config(config):
    import base64
    import marshal

    code = base64.b64encode(marshal.dumps((lambda x: x).__code__)).decode()
    config["config"]["layers"][-1].update(module="keras.layers", class_name="Lambda", registered_name=None)
    config["config"]["layers"][-1]["config"] = {"name": "logits", "function": {
        "class_name": "__lambda__", "config": {"code": code, "defaults": None, "closure": None}}}


@pytest.mark.parametrize("mutate", [_os_system_activation, _popen_layer, _eval_model, _lambda_in_config])
def test_load_checkpoint_refuses_tampered_configs(tmp_path, reference, mutate):
    from zoo.stages.build import load_model as load_checkpoint

    path = _tampered(reference, tmp_path, mutate.__name__, mutate)
    with pytest.raises(UsageError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)
    assert "refused" in str(e.value) or "not a loadable Keras model" in str(e.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not_a_zip_with_keras_name"])
def test_load_checkpoint_on_damaged_files(tmp_path, reference, damage):
    from zoo.stages.build import load_model as load_checkpoint

    path = tmp_path / "model.keras"
    raw = (reference / "model.keras").read_bytes()
    path.write_bytes({"garbage": os.urandom(2000), "truncated": raw[: len(raw) // 2], "empty": b"",
                      "not_a_zip_with_keras_name": b"{}"}[damage])
    with pytest.raises(UsageError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "not a loadable Keras model" in str(e.value)


def test_export_verify_and_resume_refuse_a_run_holding_a_lambda(tmp_path, reference, lambda_keras, monkeypatch):
    """The CLI commands that read a run's .keras files, on a run where one carries code.

    The swapped file is not the one zoo recorded, so provenance refuses it (exit 8)
    before Keras ever opens it; safe_mode is the second wall (test_load_checkpoint_refuses_a_lambda)."""
    lambda_path, sentinel = lambda_keras
    run = tmp_path / "exports" / "faults"
    shutil.copytree(reference, run, ignore=shutil.ignore_patterns(".lock"))
    monkeypatch.setenv("ZOO_DATA_DIR", str(DATASETS))
    monkeypatch.chdir(tmp_path)
    onnx_before = (run / "model.onnx").read_bytes()

    shutil.copy(lambda_path, run / "model.keras")
    for args in (["export", str(run)], ["verify", str(run)]):
        result = CliRunner().invoke(main_cli(), args)
        assert result.exit_code == 8, (args, result.output, result.exception)
        assert_one_error_line(result.stderr, str(run / "model.keras"), "changed since `zoo train` wrote it")
    assert (run / "model.onnx").read_bytes() == onnx_before

    checkpoint = run / "checkpoints" / f"epoch-{EPOCHS:04d}.keras"
    shutil.copy(lambda_path, checkpoint)
    result = CliRunner().invoke(main_cli(), ["train", str(run), "--resume", "--epochs", str(EPOCHS + 1)])
    assert result.exit_code == 8, (result.output, result.exception)
    assert_one_error_line(result.stderr, str(checkpoint), "changed since `zoo train` wrote it")
    assert not sentinel.exists()


def _schema_leaves(schema, node=None, path="", out=None):
    """(path, schema) of every leaf of the spec's JSON schema, $refs followed."""
    out = [] if out is None else out
    node = schema if node is None else node
    if "$ref" in node:
        return _schema_leaves(schema, schema["$defs"][node["$ref"].split("/")[-1]], path, out)
    for key in ("anyOf", "oneOf", "allOf"):
        for alt in node.get(key, []):
            _schema_leaves(schema, alt, path, out)
    if node.get("type") == "object" and path in KEYED_BY_DATA:  # {column: kind}: the values are a closed set
        return _schema_leaves(schema, node["additionalProperties"], f"{path}{{}}", out)
    if node.get("type") == "object":
        assert node.get("additionalProperties") is False, f"{path} takes keys it does not name"
        for name, sub in node["properties"].items():
            _schema_leaves(schema, sub, f"{path}.{name}".lstrip("."), out)
    elif node.get("type") == "array":
        _schema_leaves(schema, node["items"], f"{path}[]", out)
    elif "type" in node or "enum" in node or "const" in node:
        out.append((path, node))
    return out


FREE_TEXT = {"description", "model.class_names[]", "data.path", "data.label_column"}  # shown or opened, never imported
KEYED_BY_DATA = {"data.columns"}  # keys are a CSV's column names, only matched against its header


def test_a_spec_cannot_name_a_python_object():
    """Every leaf is a number, a bool, a closed set of words or free text that is only displayed or opened."""
    from zoo.spec import json_schema

    for path, node in _schema_leaves(json_schema()):
        kinds = {node.get("type")} - {None}
        assert kinds <= {"string", "integer", "number", "boolean", "null"}, (path, node)
        if "string" in kinds and "enum" not in node and "const" not in node:
            assert path in FREE_TEXT or "pattern" in node, f"{path}: free-form string {node}"
        for word in node.get("enum", []) + [node.get("const")]:
            assert not (isinstance(word, str) and re.search(r"[.:()/ ]", word)), f"{path}: {word!r} looks like code"


@pytest.mark.parametrize("field,value", [
    (("model", "kind"), "keras.layers.Lambda"),
    (("model", "hidden", 0, "activation"), "keras.activations.deserialize"),
    (("model", "hidden", 0, "activation"), {"class_name": "Lambda", "config": {"function": "os.system"}}),
    (("train", "optimizer"), "builtins.eval"),
    (("train", "optimizer"), {"class_name": "SGD", "module": "os"}),
    (("data", "dataset"), "__import__('os').system('true')"),
    (("model", "input_dtype"), "object"),
    (("model",), {"class_name": "Functional", "module": "keras.models", "config": {}}),
])
def test_python_objects_in_specs_are_rejected(field, value):
    spec = spec_dict("digits-mlp")
    target = spec
    for part in field[:-1]:
        target = target[part]
    target[field[-1]] = value
    with pytest.raises(SpecError) as e:
        validate(spec)
    assert any(path.startswith(field[0]) for path, _ in e.value.problems), e.value.problems


ESCAPING = ["../../x", "..", ".", "", "/etc", "a/b", "x/../../y"]


@pytest.mark.parametrize("name", ESCAPING + [".hidden", "a\0b", "A", "x" * 65, "run\n"])
def test_unsafe_run_names_are_rejected(tmp_path, name):
    spec = {**spec_dict("digits-softmax"), "name": name}
    with pytest.raises(SpecError) as e:
        validate(spec)
    assert [p for p, _ in e.value.problems] == ["name"]
    if name in ESCAPING:  # and run_dir, which `zoo train RUN` and `zoo build` go through, refuses them too
        with pytest.raises(UsageError):
            runs.run_dir(name, tmp_path / "exports")


def test_run_name_through_a_symlink_is_rejected(tmp_path):
    out = tmp_path / "exports"
    out.mkdir()
    (out / "escape").symlink_to(tmp_path.parent)
    with pytest.raises(UsageError):
        runs.run_dir("escape", out)


def test_cli_refuses_a_spec_named_outside_the_runs_folder(zoo, tmp_path):
    done = zoo("train", write_spec(tmp_path, {**spec_dict("digits-softmax"), "name": "../../x"}))
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "name")
    assert not (tmp_path.parent / "x").exists()
