"""The CLI: help everywhere, fast start-up without TensorFlow, `zoo build` on the catalog."""

import json
import re
import statistics
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import SPECS, catalog_specs

from zoo.cli import main
from zoo.spec import load_spec
from zoo.spec.catalog import count_params


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    for name, command in main.commands.items():
        assert command.help, name
        result = runner.invoke(main, [name, "-h"])
        assert result.exit_code == 0, (name, result.output)
        assert "Example:" in result.output, name


@pytest.mark.parametrize("args", [["--help"], ["list"], ["schema"], ["check", str(SPECS / "mnist-mlp.json")]])
def test_light_commands_do_not_import_tensorflow(args):
    code = ("import sys; from zoo.cli import main\n"
            "try:\n    main(%r, prog_name='zoo')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'onnxruntime', 'tf2onnx') if m in sys.modules]\n"
            "assert not heavy, heavy" % (args,))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SPECS.parent)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("args", [["--help"], ["list"]])
def test_start_up_is_under_a_second(args):
    times = []
    for _ in range(5):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, cwd=SPECS.parent)
        times.append(time.perf_counter() - start)
        assert done.returncode == 0
    assert statistics.median(times) < 1.0, times


def test_list_shows_the_catalog():
    result = CliRunner().invoke(main, ["list", "--specs", str(SPECS)])
    assert result.exit_code == 0
    for path in catalog_specs():
        assert path.name in result.output
    assert re.search(r"fashion-mnist-mlp\.json\s+mlp\s+fashion_mnist\s+203,530", result.output)
    for path in catalog_specs():  # a long description is cut between words, and says so
        description = json.loads(path.read_text()).get("description", "")
        line = next(line for line in result.output.splitlines() if line.startswith(path.name + " "))
        shown = line.split("  ")[-1].strip() if description else ""
        assert shown == description or (shown.endswith(" …") and description.startswith(shown[:-2])
                                        and description[len(shown) - 2] == " "), (shown, description)


def test_catalog_parameter_counts_equal_keras():
    from zoo.core.backend import import_keras

    import_keras()
    from zoo.stages.build import build_model

    for path in catalog_specs():
        spec = load_spec(path)
        if spec.is_table:  # its width comes from the data: `zoo list` says "by data"
            assert count_params(spec) is None
            continue
        model = build_model(spec)
        assert model.count_params() == count_params(spec), path.name


def test_same_seed_same_initial_weights():
    from zoo.core.backend import import_keras

    import_keras()
    from zoo.stages.build import build_model

    spec = load_spec(SPECS / "digits-mlp.json")
    a, b = build_model(spec), build_model(spec)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert (wa == wb).all()
    assert [layer.name for layer in a.layers] == ["input", "rescale", "flatten", "hidden_1", "logits"]


@pytest.mark.slow
def test_build_writes_the_run_and_prints_keras_counts(zoo, tmp_path):
    done = zoo("build", SPECS / "fashion-mnist-mlp.json", "--show")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no TensorFlow log noise
    assert "total params: 203,530" in done.stdout
    assert re.search(r"hidden_1\s+Dense\s+\(None, 256\)\s+200,960", done.stdout)
    run = tmp_path / "exports" / "fashion-mnist-mlp"
    resolved = json.loads((run / "spec.json").read_text())
    assert resolved["train"]["validation"] == "test"  # defaults filled in
    assert (run / "model.keras").stat().st_size > 0
    assert (tmp_path / "exports" / ".latest").read_text().strip() == "fashion-mnist-mlp"
    assert '"version": 1' in done.stdout  # --show


@pytest.mark.parametrize("args,code,message", [
    (["build", "missing.json"], 2, "missing.json: no such file"),
    (["train", "nowhere/"], 2, "nowhere/: no such run folder; make it first with `zoo build SPEC`"),
    (["train"], 2, "no run yet under"),
    (["export", "nowhere"], 2, "no such run folder"),
    (["verify", "nowhere/model.onnx"], 2, "no such ONNX file"),
    (["predict", "nowhere/model.onnx", "x.npy"], 2, "no such ONNX file"),
])
def test_usage_errors_are_one_line(zoo, args, code, message):
    done = zoo(*args)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], done.stderr


def test_spec_name_cannot_escape_the_runs_folder(tmp_path):
    from zoo.core.errors import UsageError
    from zoo.core.runs import run_dir

    for name in ["../../x", "..", "a/b", "/etc"]:
        with pytest.raises(UsageError, match="outside"):
            run_dir(name, tmp_path)
