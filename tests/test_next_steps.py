"""The commands `zoo run` prints as next steps run as printed, for a table model too."""

import shlex

import pytest
from conftest import spec_dict, write_spec

pytestmark = pytest.mark.slow


def test_the_printed_predict_command_of_a_table_run_works(zoo, tmp_path):
    spec = spec_dict("penguins-softmax")
    spec["train"].update(epochs=2)
    del spec["train"]["folds"]
    done = zoo("run", write_spec(tmp_path, spec), env={"ZOO_DATA_DIR": str(tmp_path / "no-data")})
    assert done.returncode == 0, done.stderr
    predict = next(line.strip() for line in done.stdout.splitlines() if line.strip().startswith("zoo predict "))
    assert predict.endswith("penguins.csv"), predict  # a CSV of rows, not test_data_set_0's first tensor
    answer = zoo(*shlex.split(predict)[1:])
    assert answer.returncode == 0, answer.stderr
    lines = answer.stdout.splitlines()
    assert len(lines) == 344 and all(any(s in line for s in ("Adelie", "Gentoo", "Chinstrap")) for line in lines)
