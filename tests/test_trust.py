"""Trust: provenance, nothing outside the run, inputs read exactly, named environment failures.

Each family of the hostile review is attacked with several cases through the real
`zoo` command in a subprocess: the exit code and the one error line are what a user
sees. The runs are small (scikit-learn's digits, no data folder needed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SPECS, spec_dict, write_spec
from zoo_process import child_env, one_error, zoo

REFERENCE_EPOCHS = 2  # the conftest `reference` run: digits-softmax, exported and verified


def manifest(run):
    return json.loads((run / "provenance.json").read_text())


# ----- 3. provenance -----------------------------------------------------------------------

def test_every_artefact_records_its_stage_and_inputs(run):
    m = manifest(run)
    files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert files - {"provenance.json"} == set(m), "every file of the run is recorded, and only those"
    from zoo.core.files import digest

    for name, entry in m.items():
        assert entry["sha256"] == digest(run / name), name
    assert m["model.keras"]["stage"] == "train" and set(m["model.keras"]["inputs"]) == {"@spec", "@data"}
    assert m["metrics.json"]["inputs"] == {"model.keras": m["model.keras"]["sha256"]}
    assert m["model.onnx"]["stage"] == "export"
    assert m["model.onnx"]["inputs"]["model.keras"] == m["model.keras"]["sha256"]
    assert m["verify.json"]["stage"] == "verify" and m["test_data_set_0/input_0.pb"]["stage"] == "verify"
    assert m["card.md"]["inputs"]["model.onnx"] == m["model.onnx"]["sha256"]


def test_card_and_onnx_metadata_describe_the_weights_in_the_file(run):
    import onnx

    metrics = json.loads((run / "metrics.json").read_text())["test"]
    meta = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert json.loads(meta["zoo.metrics"]) == metrics
    assert json.loads(meta["zoo.provenance"])["model.keras"] == manifest(run)["model.keras"]["sha256"]
    assert f"accuracy {metrics['accuracy']:.4f}" in (run / "card.md").read_text()


@pytest.mark.parametrize("stage", ["retrain", "rebuild"])
def test_retraining_or_rebuilding_removes_everything_made_from_the_old_model(run, stage):
    derived = ["metrics.json", "model.onnx", "card.md", "verify.json", "test_data_set_0", "predictions.png"]
    assert all((run / d).exists() for d in derived)
    if stage == "retrain":
        # a fresh training (another seed: another model) takes everything made from the old one with it
        done = zoo("train", run, "--epochs", "1", "--seed", "7", "--quiet", cwd=run.parent.parent)
        assert done.returncode == 0, done.stderr
        assert (run / "metrics.json").exists() and not (run / "model.onnx").exists()
        for d in ["model.onnx", "card.md", "verify.json", "test_data_set_0"]:
            assert not (run / d).exists(), d
    else:
        done = zoo("build", SPECS / "digits-softmax.json", "--out", run.parent, cwd=run.parent.parent)
        assert done.returncode == 0, done.stderr
        for d in [*derived, "history.json", "checkpoints"]:
            assert not (run / d).exists(), d
        assert manifest(run)["model.keras"]["stage"] == "build"
        one_error(zoo("export", run, cwd=run.parent.parent), 2, "never trained")


def test_export_refuses_a_model_keras_training_did_not_produce(run, tmp_path):
    other = tmp_path / "other"
    done = zoo("run", SPECS / "digits-softmax.json", "--epochs", "1", "--seed", "3", "--out", other, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    onnx_before = (run / "model.onnx").read_bytes()
    shutil.copy(other / "digits-softmax" / "model.keras", run / "model.keras")  # another trained model
    one_error(zoo("export", run, cwd=tmp_path), 8, str(run / "model.keras"), "changed since `zoo train`")
    assert (run / "model.onnx").read_bytes() == onnx_before
    # ... and verify refuses the pair as well, naming what breaks the chain
    one_error(zoo("verify", run, cwd=tmp_path), 8, "model.keras")


def test_verify_refuses_an_onnx_made_from_another_model(run, tmp_path):
    other = tmp_path / "other"
    done = zoo("run", SPECS / "digits-softmax.json", "--epochs", "1", "--seed", "3", "--out", other, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    foreign = run / "foreign.onnx"
    shutil.copy(other / "digits-softmax" / "model.onnx", foreign)
    one_error(zoo("verify", foreign, cwd=tmp_path), 8, str(foreign), "exported from another model.keras")
    shutil.copy(other / "digits-softmax" / "model.onnx", run / "model.onnx")  # replacing the run's own
    one_error(zoo("verify", run, cwd=tmp_path), 8, str(run / "model.onnx"), "changed since `zoo export`")


@pytest.mark.parametrize("name,edit,command", [
    ("metrics.json", lambda p: p.write_text(p.read_text().replace('"accuracy": 0.', '"accuracy": 0.9')), "export"),
    ("spec.json", lambda p: p.write_text(p.read_text().replace('"seed": 0', '"seed": 1')), "export"),
    ("history.json", lambda p: p.write_text(p.read_text()[:-2] + " \n]\n"), "resume"),
    ("checkpoints/epoch-0002.keras", lambda p: p.write_bytes(p.read_bytes() + b"\0"), "resume"),
    ("model.onnx", lambda p: p.write_bytes(p.read_bytes() + b"\0"), "verify"),
    ("provenance.json", lambda p: p.write_text('{"model.keras": 1}'), "export"),
])
def test_a_file_edited_by_hand_is_named(run, name, edit, command):
    edit(run / name)
    args = {"export": ["export", run], "verify": ["verify", run],
            "resume": ["train", run, "--resume", "--epochs", "3", "--quiet"]}[command]
    one_error(zoo(*args, cwd=run.parent.parent), 8, str(run / name))


def test_a_process_killed_between_rename_and_record_leaves_a_consistent_run(run):
    """The record is staged before the rename and committed after: the window between is safe."""
    from zoo.core import files, provenance

    entries = manifest(run)
    # what a SIGKILL right after os.replace leaves: the new file, the record still pending
    new = b'{"edited": "by zoo, killed before the commit"}\n'
    with files.atomic_path(run / "metrics.json") as tmp:
        tmp.write_bytes(new)
    import hashlib

    pending = {"sha256": hashlib.sha256(new).hexdigest(), "stage": "train", "inputs": entries["metrics.json"]["inputs"]}
    entries["metrics.json"]["pending"] = pending
    (run / "provenance.json").write_text(json.dumps(entries))
    assert provenance.check(run, "metrics.json")["sha256"] == pending["sha256"]


# ----- 5. nothing outside the run ----------------------------------------------------------

@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    return folder


def assert_untouched(outside):
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    assert (outside / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("link,command", [
    ("checkpoints", "train"),
    ("test_data_set_0", "verify"),
    ("model.onnx", "export"),
    ("card.md", "export"),
    ("verify.json", "verify"),
    ("history.json", "train"),
    (".lock", "export"),
])
def test_no_command_writes_truncates_or_deletes_through_a_link(run, outside, link, command):
    target = outside / "precious.txt"
    path = run / link
    if path.is_dir():
        shutil.rmtree(path)
        path.symlink_to(outside, target_is_directory=True)
    else:
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    args = {"train": ["train", run, "--epochs", "1", "--quiet"], "verify": ["verify", run],
            "export": ["export", run]}[command]
    done = zoo(*args, cwd=run.parent.parent)
    assert_untouched(outside)
    assert "Traceback" not in done.stderr
    if done.returncode:  # refused, naming the link
        one_error(done, 2, "symbolic link")
    else:  # the stale artefact was removed (the link itself, never its target) and a real one written
        assert not path.is_symlink() and path.exists(), done.stderr


def test_a_run_folder_that_is_a_link_is_refused(run, outside, tmp_path):
    fake = tmp_path / "exports" / "linked"
    fake.symlink_to(run, target_is_directory=True)
    one_error(zoo("export", fake, cwd=tmp_path), 2, "symbolic link")
    spec = spec_dict("digits-softmax")
    spec["name"] = "elsewhere"
    (tmp_path / "exports" / "elsewhere").symlink_to(outside, target_is_directory=True)
    one_error(zoo("build", write_spec(tmp_path, spec), "--out", tmp_path / "exports", cwd=tmp_path), 2,
              "would write outside")
    assert_untouched(outside)


def test_a_folder_that_is_not_a_run_gets_no_lock(reference, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(reference / "model.onnx", plain / "model.onnx")
    for args in (["verify", plain / "model.onnx"], ["export", plain], ["verify", plain]):
        one_error(zoo(*args, cwd=tmp_path), 2, "not a zoo run")
    assert sorted(p.name for p in plain.iterdir()) == ["model.onnx"]
    spec = spec_dict("digits-softmax")
    occupied = tmp_path / "exports" / "digits-softmax"
    occupied.mkdir(parents=True)
    (occupied / "notes.txt").write_text("mine")
    one_error(zoo("train", write_spec(tmp_path, spec), "--out", tmp_path / "exports", cwd=tmp_path), 2, "not a zoo run")
    assert sorted(p.name for p in occupied.iterdir()) == ["notes.txt"]


# ----- 6. inputs read exactly, or refused ----------------------------------------------------

def _png(path, array, mode, **kw):
    from PIL import Image

    Image.fromarray(array, mode=mode).save(path, **kw)
    return path


PIXELS = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 4).astype(np.uint8)  # 0..252


@pytest.mark.parametrize("mode", ["L", "I;16", "P", "RGB", "RGBA", "LA", "1"])
def test_every_png_mode_reads_exactly(tmp_path, mode):
    from PIL import Image

    from zoo.stages.predict import read_input

    path = tmp_path / f"{mode.replace(';', '')}.png"
    if mode == "L":
        expected = PIXELS
        Image.fromarray(PIXELS, "L").save(path)
    elif mode == "I;16":
        expected = PIXELS
        Image.fromarray(PIXELS.astype(np.uint16) * 257).save(path)  # 8-bit v is 16-bit v*257
    elif mode == "P":
        expected = PIXELS
        Image.fromarray(PIXELS, "L").convert("P").save(path)
    elif mode == "RGB":
        expected = PIXELS
        Image.fromarray(np.stack([PIXELS] * 3, -1), "RGB").save(path)
    elif mode == "RGBA":  # half the pixels fully transparent: over black they read 0
        alpha = np.where(np.arange(64).reshape(8, 8) % 2 == 0, 255, 0).astype(np.uint8)
        expected = np.where(alpha == 255, PIXELS, 0).astype(np.uint8)
        Image.fromarray(np.stack([PIXELS] * 3 + [alpha], -1), "RGBA").save(path)
    elif mode == "LA":
        alpha = np.full((8, 8), 128, np.uint8)
        expected = np.round(PIXELS * (128 / 255)).astype(np.uint8)
        Image.fromarray(np.stack([PIXELS, alpha], -1), "LA").save(path)
    else:  # bilevel
        bits = PIXELS > 127
        expected = np.where(bits, 255, 0).astype(np.uint8)
        Image.fromarray(bits).save(path)
    x = read_input(path, [8, 8], "uint8")
    assert Image.open(path).mode in {"I;16": ("I;16", "I"), "LA": ("LA",), "1": ("1",)}.get(mode, (mode,))
    np.testing.assert_array_equal(x[0], expected)


@pytest.mark.parametrize("make,code,words", [
    (lambda p: np.save(p / "x.npy", np.full((1, 8, 8), 1e300)), 3, ["beyond float32's range"]),
    (lambda p: np.save(p / "x.npy", np.full((1, 8, 8), np.nan)), 3, ["NaN or inf"]),
    (lambda p: (p / "x.csv").write_text(",".join(["1e39"] * 64) + "\n"), 3, ["beyond float32's range"]),
    (lambda p: np.save(p / "x.npy", np.zeros((0, 8, 8), np.float32)), 3, ["holds no examples"]),
    (lambda p: (p / "x.csv").write_text("\n\n"), 3, ["holds no examples"]),
    (lambda p: (p / "x.npy").write_text("1,2,3\n"), 3, ["is not a .npy file"]),
    (lambda p: (p / "x.png").write_text("not an image"), 3, ["is not an image"]),
    (lambda p: (p / "x.pb").write_text("plain text"), 3, ["is not a TensorProto"]),
    (lambda p: (p / "x.csv").write_bytes(b"\xff\xfe\x00garbage"), 3, ["not a text CSV"]),
    (lambda p: (p / "x.txt").write_text("1"), 2, ["unknown input type"]),
])
def test_predict_inputs_are_read_exactly_or_refused(reference, tmp_path, make, code, words):
    make(tmp_path)
    bad = next(p for p in tmp_path.iterdir() if p.name.startswith("x."))
    one_error(zoo("predict", reference / "model.onnx", bad, cwd=tmp_path), code, str(bad), *words)


def test_predict_reads_test_data_set_0_as_written(reference, tmp_path):
    done = zoo("predict", reference / "model.onnx", reference / "test_data_set_0" / "input_0.pb", "--json",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 16


def _onnx_variant(reference, tmp_path, change):
    import onnx

    proto = onnx.load(str(reference / "model.onnx"))
    change(proto)
    path = tmp_path / "variant.onnx"
    onnx.save(proto, str(path))
    return path


def _symbolic(proto):
    proto.graph.input[0].type.tensor_type.shape.dim[1].ClearField("dim_value")
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "height"


def _second_input(proto):
    import onnx

    proto.graph.input.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, ["batch", 3]))


def _bad_metadata(proto):
    for p in proto.metadata_props:
        if p.key == "zoo.class_names":
            p.value = "['0', '1'"


@pytest.mark.parametrize("change,words", [
    (_symbolic, ["symbolic or unknown size on axis 1"]),
    (_second_input, ["2 inputs"]),
    (_bad_metadata, ["zoo.class_names is not valid JSON"]),
    (lambda proto: proto.graph.output.pop(), ["outputs"]),
])
def test_onnx_files_that_break_the_contract_are_named(reference, tmp_path, change, words):
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    path = _onnx_variant(reference, tmp_path, change)
    one_error(zoo("predict", path, tmp_path / "x.npy", cwd=tmp_path), 2, str(path), *words)


def test_training_data_beyond_float32_is_a_data_error(tmp_path):
    spec = spec_dict("digits-softmax")
    spec["name"] = "huge"
    spec["data"] = {"dataset": "npz", "path": str(tmp_path / "huge.npz")}
    x = np.ones((20, 8, 8))
    x[3, 2, 2] = 1e300
    np.savez(tmp_path / "huge.npz", x_train=x, y_train=np.arange(20) % 10, x_test=np.ones((5, 8, 8)),
             y_test=np.arange(5))
    one_error(zoo("train", write_spec(tmp_path, spec), "--out", tmp_path / "exports", cwd=tmp_path), 3,
              "x_train holds 1e+300, beyond float32's range")


# ----- 7. the environment's failures ------------------------------------------------------

def _as_nobody(fn, *args):
    """Run fn(*args) in a forked child with uid/gid nobody: real EACCES, even when the tests run as root."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = fn(*args)
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture
def world(tmp_path_factory):
    """A folder everyone may enter (pytest's tmp folders are 0700)."""
    folder = Path(tempfile_dir()) / f"zoo-world-{os.getpid()}-{time.monotonic_ns()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def tempfile_dir():
    import tempfile

    return tempfile.gettempdir()


def _denied(what, world, errfile):
    """In the forked child (user nobody): read the data or write a run; the ZooError's code and line.

    The child calls the library, which the parent has already imported: the interpreter's
    own files (under /root) are out of nobody's reach, so nothing may load lazily here."""
    from zoo.core import provenance, runs
    from zoo.core.errors import ZooError
    from zoo.spec import load_spec
    from zoo.stages import data

    try:
        if what == "data":
            data.load_dataset(load_spec(world / "spec.json"), world)
        else:
            with runs.locked(world / "exports" / "digits-softmax"):
                provenance.save_text(world / "exports" / "digits-softmax", "spec.json", "{}", "build")
    except ZooError as e:
        Path(errfile).write_text(str(e))
        return e.exit_code
    except BaseException as e:  # anything else is a failure of the test, with its reason
        Path(errfile).write_text(f"{type(e).__name__}: {e}")
        return 98
    return 0


@pytest.mark.parametrize("what", ["data", "output"])
def test_permission_denied_is_named_exit_9(world, what):
    import encodings.utf_8_sig  # noqa: F401  (see _denied: nothing may load in the child)

    import zoo.core.runs  # noqa: F401
    import zoo.stages.data  # noqa: F401

    if os.geteuid() != 0:
        pytest.skip("dropping to user nobody needs root")
    spec = spec_dict("digits-softmax")
    spec["data"] = {"dataset": "npz", "path": str(world / "data.npz")}
    np.savez(world / "data.npz", x_train=np.ones((20, 8, 8), np.float32), y_train=np.arange(20) % 10,
             x_test=np.ones((5, 8, 8), np.float32), y_test=np.arange(5))
    (world / "spec.json").write_text(json.dumps(spec))
    (world / "spec.json").chmod(0o644)
    (world / "data.npz").chmod(0o600 if what == "data" else 0o644)  # root's: unreadable to nobody
    (world / "exports").mkdir(mode=0o755)  # root's: not writable by nobody
    err = world / "stderr.txt"
    err.write_text("")
    err.chmod(0o666)
    code = _as_nobody(_denied, what, world, err)
    assert code == 9, err.read_text()
    line = err.read_text()
    assert "\n" not in line and "Permission denied" in line, line
    assert line.startswith(str(world / "data.npz" if what == "data" else world / "exports")), line


def test_closed_and_full_stdout(reference, tmp_path):
    r, w = os.pipe()
    os.close(r)
    args = [sys.executable, "-m", "zoo", "predict", reference / "model.onnx",
            reference / "test_data_set_0" / "input_0.pb"]
    for extra in ([], ["--help"]):
        done = subprocess.run([*map(str, args), *extra], stdout=w, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        one_error(done, 141, "stdout was closed")
    os.close(w)
    with open("/dev/full", "w") as full:
        for extra in ([], ["--json"]):
            done = subprocess.run([*map(str, args), *extra], stdout=full, stderr=subprocess.PIPE, text=True)
            one_error(done, 9, "cannot write to stdout", "No space left")


def test_a_full_disk_is_named_and_leaves_no_partial_file(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("needs a small tmpfs (mount -t tmpfs, as root) to fill a real disk")
    try:
        done = zoo("build", SPECS / "digits-mlp.json", "--out", disk, cwd=tmp_path)
        one_error(done, 9, "No space left on device", "the disk is full")
        leftovers = [p.name for p in disk.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
        assert leftovers == []
    finally:
        subprocess.run(["umount", str(disk)])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_backend_that_is_not_installed_names_the_install_command(tmp_path, backend):
    import importlib.util

    if importlib.util.find_spec(backend):
        pytest.skip(f"{backend} is installed here")
    one_error(zoo("train", SPECS / "digits-softmax.json", "--backend", backend, "--out", tmp_path, cwd=tmp_path), 2,
              f"the {backend} backend is not installed", "pip install")
    assert not any(tmp_path.iterdir())


def _start(args, cwd, env=None):
    full = child_env(env)
    return subprocess.Popen([sys.executable, "-m", "zoo", *map(str, args)], cwd=cwd, env=full,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_training_exits_clearly_and_resume_continues(tmp_path, sig, code):
    spec = spec_dict("digits-softmax")
    spec["train"].update(epochs=5000, batch_size=8)  # far more than it can finish before the signal
    out = tmp_path / "exports"
    proc = _start(["train", write_spec(tmp_path, spec), "--out", out, "--quiet"], tmp_path)
    history = out / "digits-softmax" / "history.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(json.loads(history.read_text())) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert proc.returncode == code, err
    assert len(lines) == 1 and "--resume" in lines[0] and "Traceback" not in err
    done_before = len(json.loads(history.read_text()))
    assert 2 <= done_before < 5000
    assert not [p for p in (out / "digits-softmax").rglob(".*.tmp*")]
    # resume, for a few more epochs than were done (more epochs is a change --resume applies)
    done = zoo("train", out / "digits-softmax", "--resume", "--epochs", done_before + 3, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [h["epoch"] for h in json.loads(history.read_text())] == list(range(1, done_before + 4))


@pytest.mark.parametrize("delay", [0.25, 0.8, 2.5])
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_at_any_moment_of_start_up_is_one_line(tmp_path, delay, sig, code):
    proc = _start(["train", SPECS / "digits-softmax.json", "--out", tmp_path / "exports", "--quiet"], tmp_path)
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == -sig or "init_import_site" in err:
        # before the first instruction of zoo: the interpreter's own start-up (~30 ms), which
        # no program can handle; on a loaded machine a delay can still land there
        pytest.skip("the signal came during the interpreter's own initialisation, before any zoo code")
    assert "Traceback" not in err, err
    if proc.returncode == 0:
        return  # it finished first
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err


def test_warnings_stay_hidden_unless_debugging(tmp_path):
    """PYTHONWARNINGS=always would show every warning numpy, Keras or Pillow raises."""
    args = ["run", SPECS / "digits-softmax.json", "--epochs", "1", "--out", tmp_path / "exports", "--quiet"]
    done = zoo(*args, cwd=tmp_path, env={"PYTHONWARNINGS": "always"})
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr[-2000:]
    debug = zoo(*args, cwd=tmp_path, env={"PYTHONWARNINGS": "always", "ZOO_DEBUG": "1"})
    assert debug.returncode == 0
    assert "Warning" in debug.stderr  # the same run has warnings to hide
