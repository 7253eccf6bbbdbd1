"""zoo.core.runs: run folders, their lock and its hand-off to a child process; zoo.core.files:
atomic writes that never go through a link."""

import os
import subprocess
import sys
import textwrap

import pytest

from zoo.core import contract, files, provenance, runs
from zoo.core.errors import RunLockedError, UsageError


def test_a_run_name_cannot_leave_the_runs_folder(tmp_path):
    assert runs.run_dir("mnist-mlp", tmp_path) == (tmp_path / "mnist-mlp").resolve()
    for name in ("../escape", "a/b", ".."):
        with pytest.raises(UsageError, match="would write outside"):
            runs.run_dir(name, tmp_path)


def _hold_lock_in_a_child(run):
    code = textwrap.dedent(f"""
        import sys, time
        from zoo.core import runs
        with runs.locked({str(run)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_process_is_refused_at_once_and_named(tmp_path):
    run = tmp_path / "demo"
    child = _hold_lock_in_a_child(run)
    try:
        with pytest.raises(RunLockedError, match=f"pid {child.pid}"):
            with runs.locked(run):
                pass
    finally:
        child.kill()
        child.wait()
    with runs.locked(run) as lock:  # the kernel dropped the dead process's lock
        assert lock.run == run.resolve() and lock.fd >= 0


def test_the_lock_is_handed_to_a_child_explicitly_and_checked(tmp_path):
    run = tmp_path / "demo"
    code = textwrap.dedent("""
        import sys
        from zoo.core import runs
        from zoo.core.errors import RunLockedError
        try:
            with runs.adopted(sys.argv[1], int(sys.argv[2])):
                print("adopted")
        except RunLockedError as e:
            print("refused", e)
    """)
    with runs.locked(run) as lock:
        done = subprocess.run([sys.executable, "-c", code, str(run), str(lock.fd)], pass_fds=(lock.fd,),
                              capture_output=True, text=True)
        assert done.stdout.strip() == "adopted", done.stderr
        other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)  # some other open file: not the lock
        done = subprocess.run([sys.executable, "-c", code, str(run), str(other)], pass_fds=(other,),
                              capture_output=True, text=True)
        os.close(other)
        assert done.stdout.startswith("refused"), done.stderr


def test_a_folder_that_is_not_a_run_is_refused_and_gets_no_lock_file(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(UsageError, match="not a zoo run"):
        with runs.locked(tmp_path / "photos"):
            pass
    assert not (tmp_path / "photos" / runs.LOCK_FILE).exists()


def test_a_killed_writers_temporary_files_are_removed_under_the_lock(tmp_path):
    run = tmp_path / "demo"
    with runs.locked(run):
        provenance.save_text(run, contract.SPEC_FILE, "{}", "build")
    stale = run / ".model.onnx.abcd1234.tmp.onnx"
    stale.write_bytes(b"half")
    with runs.locked(run):
        pass
    assert not stale.exists()


def test_start_over_removes_every_trained_artefact(tmp_path):
    run = tmp_path / "demo"
    with runs.locked(run):
        provenance.save_text(run, contract.SPEC_FILE, "{}", "build")
        provenance.save_text(run, contract.MODEL_KERAS, "w", "train")
        provenance.save_text(run, contract.MODEL_ONNX, "o", "export", inputs=[contract.MODEL_KERAS])
        (run / contract.CHECKPOINTS).mkdir()
        (run / contract.CHECKPOINTS / "epoch-0001.keras").write_text("c")
        provenance.save_text(run, "web/index.html", "p", "web", inputs=[contract.MODEL_ONNX])
        removed = runs.start_over(run)
    left = sorted(p.name for p in run.iterdir() if not p.name.startswith(".") and p.name != "web")
    assert left == [contract.MANIFEST, contract.SPEC_FILE] and not (run / "web" / "index.html").exists()
    # what was removed is said by name: the trained files, the checkpoints and what was made from them
    assert removed == [contract.MODEL_KERAS, contract.MODEL_ONNX, contract.CHECKPOINTS, "web"]


def test_latest_names_the_last_run_and_says_what_to_do_without_one(tmp_path):
    with pytest.raises(UsageError, match="zoo build SPEC"):
        runs.latest(tmp_path)
    run = runs.run_dir("demo", tmp_path)
    run.mkdir(parents=True)
    runs.set_latest(run)
    assert runs.latest(tmp_path) == run


def test_atomic_writes_keep_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "a.txt"
    files.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_nothing_is_written_through_a_link(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (tmp_path / "link.txt").symlink_to(outside)
    with pytest.raises(UsageError, match="symbolic link"):
        files.write_text(tmp_path / "link.txt", "overwritten")
    assert outside.read_text() == "precious"
    run = tmp_path / "demo"
    with runs.locked(run):
        provenance.save_text(run, contract.SPEC_FILE, "{}", "build")
        (run / contract.TEST_DATA_SET).symlink_to(tmp_path)
        with pytest.raises(UsageError, match="symbolic link"):
            files.write_text(run / contract.test_data_name("input", 0), "x")
