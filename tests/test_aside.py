"""A failure after a fresh start never costs the user the artefacts they had (issue 19 §6, 20 §1.1).

A fresh training or build sets the run's earlier artefacts aside in RUN/.replaced/; they are
dropped when it completes and put back when it fails, however it fails. The first tests drive
zoo.core.aside in-process through every state a kill can leave; the rest attack a real exported
run through the real `zoo` command: a NaN loss, SIGINT, SIGTERM, SIGKILL, a broken pipe on
stdout, links planted in the run. After each the earlier artefacts are byte-identical and
`zoo verify RUN` passes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import spec_dict, write_spec
from zoo_process import child_env, one_error, snapshot, zoo

from zoo.core import aside, contract, provenance, runs
from zoo.core.errors import TrainingError, UsageError

REFERENCE_EPOCHS = 2  # the conftest `reference` run: digits-softmax, exported and verified
ASIDE = contract.REPLACED_DIR


# ----- in-process: the mechanism, and every state a kill leaves ----------------------------------

def trained(folder: Path) -> Path:
    """A small run made through zoo's own writers: a spec, a trained model, an export, a page, checkpoints."""
    with runs.locked(folder):
        provenance.save_text(folder, contract.SPEC_FILE, '{"v": 1}\n', "build")
        provenance.save_text(folder, contract.HISTORY_FILE, "[1]\n", "train")
        provenance.save_text(folder, contract.checkpoint_name(1), "c1", "train")
        provenance.save_text(folder, contract.MODEL_KERAS, "w1", "train", inputs=[contract.SPEC_FILE])
        provenance.save_text(folder, contract.METRICS_FILE, "{}\n", "train", inputs=[contract.MODEL_KERAS])
        provenance.save_text(folder, contract.MODEL_ONNX, "o1", "export", inputs=[contract.MODEL_KERAS])
        provenance.save_text(folder, contract.test_data_name("input", 0), "i", "verify", inputs=[contract.MODEL_ONNX])
        provenance.save_text(folder, "web/ort/page.js", "p", "web", inputs=[contract.MODEL_ONNX])
    (folder / "web" / "node_modules").mkdir()  # the user's, unrecorded: never zoo's to set aside
    (folder / "web" / "node_modules" / "x.js").write_text("the user's")
    return folder


def retrain(folder: Path, fail=None):
    """What a fresh training does to the run, under its lock: start over, write new files; then `fail`."""
    with runs.locked(folder):
        said = runs.start_over(folder)
        provenance.save_text(folder, contract.SPEC_FILE, '{"v": 2}\n', "train")
        provenance.save_text(folder, contract.HISTORY_FILE, "[]\n", "train")
        provenance.save_text(folder, contract.checkpoint_name(1), "new c1", "train")
        provenance.save_text(folder, contract.checkpoint_name(2), "new c2", "train")
        assert (folder / ASIDE).is_dir()
        if fail is not None:
            raise fail
        provenance.save_text(folder, contract.MODEL_KERAS, "w2", "train", inputs=[contract.SPEC_FILE])
    return said


def test_a_completed_fresh_start_drops_what_it_set_aside(tmp_path):
    run = trained(tmp_path / "demo")
    said = retrain(run)
    assert said[:3] == [contract.MODEL_KERAS, contract.HISTORY_FILE, contract.METRICS_FILE] and "web" in said
    assert not (run / ASIDE).exists() and not (run / contract.MODEL_ONNX).exists()
    assert sorted(provenance.manifest(run)) == sorted([contract.HISTORY_FILE, contract.checkpoint_name(1),
                                                       contract.checkpoint_name(2), contract.MODEL_KERAS,
                                                       contract.SPEC_FILE])
    assert (run / "web" / "node_modules" / "x.js").read_text() == "the user's"


@pytest.mark.parametrize("failure", [TrainingError("loss became nan"), KeyboardInterrupt(), BrokenPipeError(32, "x"),
                                     RuntimeError("a bug")])
def test_a_failed_fresh_start_puts_everything_back_byte_for_byte(tmp_path, failure):
    run = trained(tmp_path / "demo")
    before = snapshot(run)
    with pytest.raises(type(failure)) as caught:
        retrain(run, fail=failure)
    assert snapshot(run) == before
    assert "were put back as they were" in caught.value.kept and "model.onnx" in caught.value.kept
    if isinstance(failure, TrainingError):  # an API caller reads it in the message
        assert str(caught.value).startswith("loss became nan; demo's earlier ")
    with runs.locked(run, create=False):
        provenance.check_chain(run, "web/ort/page.js")  # the records match the files again


@pytest.mark.parametrize("left", ["build", "a first training's first moment"])
def test_a_run_with_nothing_of_value_yet_is_cleared_without_setting_anything_aside(tmp_path, left):
    run = tmp_path / "demo"
    with runs.locked(run):
        provenance.save_text(run, contract.SPEC_FILE, "{}\n", "build")
        if left == "build":
            provenance.save_text(run, contract.MODEL_KERAS, "untrained", "build", inputs=[contract.SPEC_FILE])
        else:  # killed before its first epoch committed
            provenance.save_text(run, contract.HISTORY_FILE, "[]\n", "train")
            (run / contract.CHECKPOINTS).mkdir()
    with pytest.raises(KeyboardInterrupt):
        with runs.locked(run):
            assert runs.start_over(run)
            assert not (run / ASIDE).exists()
            provenance.save_text(run, contract.checkpoint_name(1), "c1", "train")
            raise KeyboardInterrupt
    assert (run / contract.checkpoint_name(1)).exists()  # a first training's checkpoints stay, for --resume


def test_a_run_with_one_committed_epoch_is_kept(tmp_path):
    run = tmp_path / "demo"
    with runs.locked(run):
        provenance.save_text(run, contract.SPEC_FILE, "{}\n", "build")
        provenance.save_text(run, contract.HISTORY_FILE, '[{"epoch": 1}]\n', "train")
        provenance.save_text(run, contract.checkpoint_name(1), "c1", "train")
    before = snapshot(run)
    with pytest.raises(KeyboardInterrupt):
        with runs.locked(run):
            runs.start_over(run)
            assert (run / ASIDE).is_dir()
            provenance.save_text(run, contract.checkpoint_name(1), "another c1", "train")
            raise KeyboardInterrupt
    assert snapshot(run) == before


def _state(run: Path, stage: str) -> None:
    """Leave `run` as a process killed (its lock gone with it) at `stage` of a fresh start leaves it."""
    if stage == "mid-copy":  # killed while copying spec.json: the copy is half of it
        (run / ASIDE / aside.FILES).mkdir(parents=True)
        (run / ASIDE / contract.SPEC_FILE).write_bytes((run / contract.SPEC_FILE).read_bytes()[:3])
        return
    if stage == "mid-set-aside":  # the copies made, the first artefacts renamed, COMPLETE not yet
        moves = aside._files(run, [*runs.TRAINED, "web/ort/page.js"])
        (run / ASIDE / aside.FILES).mkdir(parents=True)
        for name in aside.COPIED:
            shutil.copyfile(run / name, run / ASIDE / name)
        for rel in moves[:3]:
            (run / ASIDE / aside.FILES / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(run / rel, run / ASIDE / aside.FILES / rel)
        return
    runs.start_over(run)
    if stage == "set-aside":
        return
    provenance.save_text(run, contract.SPEC_FILE, '{"v": 2}\n', "train")
    provenance.save_text(run, contract.checkpoint_name(3), "new", "train")
    if stage == "mid-restore":  # the new files removed, RESTORING marked, the first artefact moved back
        aside.remove_new(run, runs.TRAINED)
        (run / ASIDE / aside.RESTORING).touch()
        first = sorted((run / ASIDE / aside.FILES).rglob("*.*"))[0]
        rel = first.relative_to(run / ASIDE / aside.FILES)
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        os.rename(first, run / rel)
    elif stage == "committed":
        provenance.save_text(run, contract.MODEL_KERAS, "w2", "train")
        (run / ASIDE / aside.COMMITTED).touch()


@pytest.mark.parametrize("stage", ["mid-copy", "mid-set-aside", "set-aside", "training", "mid-restore"])
def test_the_next_command_puts_back_what_a_killed_fresh_start_set_aside(tmp_path, capfd, stage):
    run = trained(tmp_path / "demo")
    before = snapshot(run)
    _state(run, stage)
    assert (run / ASIDE).is_dir()
    with runs.locked(run, create=False):
        pass
    assert snapshot(run) == before, stage
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zoo: ") and "were put back from .replaced/" in err[0], err


def test_a_committed_leftover_is_only_deleted(tmp_path, capfd):
    run = trained(tmp_path / "demo")
    _state(run, "committed")
    after = {k: v for k, v in snapshot(run).items() if not k.startswith(ASIDE)}
    with runs.locked(run, create=False):
        pass
    assert snapshot(run) == after and capfd.readouterr().err == ""


@pytest.mark.parametrize("planted", ["link", "file", "foreign folder"])
def test_a_replaced_folder_zoo_did_not_make_is_refused_and_left_alone(tmp_path, planted):
    run = trained(tmp_path / "demo")
    user = tmp_path / "user"
    (user / aside.FILES).mkdir(parents=True)
    (user / aside.FILES / contract.MODEL_ONNX).write_text("the user's")
    (user / aside.COMPLETE).touch()
    if planted == "link":
        (run / ASIDE).symlink_to(user, target_is_directory=True)
    elif planted == "file":
        (run / ASIDE).write_text("the user's")
    else:
        shutil.copytree(user, run / ASIDE)
        (run / ASIDE / "notes.txt").write_text("the user's")
    before, mine = snapshot(run), snapshot(user)
    for attempt in (lambda: runs.locked(run, create=False).__enter__(), lambda: retrain(run)):
        with pytest.raises(UsageError, match=f"{ASIDE}: (is a symbolic link|is not a folder zoo made)"):
            attempt()
    assert snapshot(run) == before and snapshot(user) == mine


def test_nothing_is_set_aside_through_a_linked_folder(tmp_path):
    run = trained(tmp_path / "demo")
    user = tmp_path / "user"
    shutil.move(run / "web", user)
    (run / "web").symlink_to(user, target_is_directory=True)
    before, mine = snapshot(run), snapshot(user)
    with pytest.raises(UsageError, match="symbolic link"):
        retrain(run)
    assert snapshot(run) == before and snapshot(user) == mine and not (run / ASIDE).exists()


# ----- through the real command: attacks on a retrained exported run -------------------------------

def earlier(run: Path) -> dict:
    """What a user had: every file of the exported run."""
    return snapshot(run)


def still_verifies(run: Path, cwd: Path) -> None:
    done = zoo("verify", run, cwd=cwd)
    assert done.returncode == 0 and "passed" in done.stdout, done.stderr[-2000:]


def diverging_spec(tmp_path: Path) -> Path:
    """The run's name with another model (an MLP) and a learning rate that makes its loss NaN in the first epoch."""
    spec = spec_dict("digits-mlp")
    spec["name"] = "digits-softmax"
    spec["train"]["learning_rate"] = 1e20
    return write_spec(tmp_path, spec)


@pytest.mark.slow
@pytest.mark.parametrize("command", [["train", "{spec}", "--out", "{out}", "--epochs", "2"],
                                     ["run", "{spec}", "--out", "{out}", "--epochs", "2"]])
def test_a_nan_loss_after_a_fresh_start_puts_the_earlier_run_back(run, tmp_path, command):
    before = earlier(run)
    args = [a.format(spec=diverging_spec(tmp_path), out=run.parent) for a in command]
    line = one_error(zoo(*args, cwd=tmp_path), 4, "loss became nan", "this training's checkpoints are dropped",
                     "were put back as they were")
    assert "model.onnx" in line and "verify.json" in line
    assert snapshot(run) == before
    still_verifies(run, tmp_path)


def _train_until(run: Path, cwd: Path, marker="epoch 3/", **popen):
    """`zoo train RUN --epochs 400` (a fresh start: more epochs than it will reach), read up to `marker`."""
    popen.setdefault("stdout", subprocess.PIPE)
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "train", str(run), "--epochs", "400"], cwd=cwd,
                            env=child_env(), text=True, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)
    seen = ""
    while marker not in seen:
        line = proc.stdout.readline()
        assert line, (seen, proc.stderr.read() if proc.poll() is not None else "")
        seen += line
    assert "set aside" in seen and (run / ASIDE).is_dir()
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_mid_retraining_puts_the_earlier_run_back(run, tmp_path, sig, code, word):
    before = earlier(run)
    proc = _train_until(run, tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == code, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {word}; digits-softmax's earlier "), err
    assert "were put back as they were" in lines[0] and "--resume" not in lines[0]
    assert snapshot(run) == before
    still_verifies(run, tmp_path)


@pytest.mark.slow
def test_sigkill_mid_retraining_then_the_next_command_puts_the_earlier_run_back(run, tmp_path):
    before = earlier(run)
    proc = _train_until(run, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and (run / ASIDE).is_dir()
    assert not (run / "model.onnx").exists()  # the state SIGKILL left: the new training's files
    done = zoo("verify", run, cwd=tmp_path)
    assert done.returncode == 0 and "passed" in done.stdout, done.stderr[-2000:]
    note = done.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith(f"zoo: {run}: a fresh training or build was killed"), note
    assert "model.onnx" in note[0] and "were put back from .replaced/" in note[0]
    # verify wrote verify.json again (and its record); everything else is what the user had
    after = snapshot(run)
    rewritten = {"verify.json", "provenance.json"}
    assert {k: v for k, v in after.items() if k not in rewritten} == {k: v for k, v in before.items()
                                                                      if k not in rewritten}
    old, new = (json.loads(s["provenance.json"]) for s in (before, after))
    assert {k: v for k, v in new.items() if k != "verify.json"} == {k: v for k, v in old.items() if k != "verify.json"}


@pytest.mark.slow
def test_a_broken_pipe_on_stdout_mid_retraining_puts_the_earlier_run_back(run, tmp_path):
    """`zoo train RUN | head -c1`: the reader takes one byte and goes; zoo's next line fails with EPIPE."""
    before = earlier(run)
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "train", str(run), "--epochs", "400"], cwd=tmp_path,
                            env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(1) == b"r"  # "retraining ...": the fresh start has begun
    proc.stdout.close()
    err = proc.communicate(timeout=120)[1].decode()
    lines = err.strip().splitlines()
    assert proc.returncode == 141, err[-2000:]
    assert len(lines) == 1 and "stdout was closed" in lines[0] and "were put back as they were" in lines[0], err
    assert snapshot(run) == before
    still_verifies(run, tmp_path)


@pytest.mark.slow
def test_a_link_planted_mid_retraining_is_removed_never_followed(run, tmp_path):
    """While the new training runs, model.onnx (set aside) is planted as a link to the user's file."""
    before, users = earlier(run), tmp_path / "users-model.onnx"
    users.write_bytes(b"the user's own file")
    proc = _train_until(run, tmp_path)
    (run / "model.onnx").symlink_to(users)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "were put back" in err, err[-2000:]
    assert users.read_bytes() == b"the user's own file" and not (run / "model.onnx").is_symlink()
    assert snapshot(run) == before
    still_verifies(run, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("planted", ["link", "foreign folder"])
def test_a_planted_replaced_folder_is_refused_by_the_command(run, tmp_path, planted):
    user = tmp_path / "user"
    (user / "files").mkdir(parents=True)
    (user / "files" / "model.onnx").write_bytes(b"the user's")
    if planted == "link":
        (run / ASIDE).symlink_to(user, target_is_directory=True)
    else:  # a folder of the user's that happens to have the name (zoo's own layout cannot be told apart)
        shutil.copytree(user, run / ASIDE)
        (run / ASIDE / "notes.txt").write_text("the user's")
    before, mine = earlier(run), snapshot(user)
    one_error(zoo("train", run, "--epochs", "1", cwd=tmp_path), 2, str(run / ASIDE))
    assert snapshot(run) == before and snapshot(user) == mine
