"""What a card (and `zoo serve`'s banner) says about serving a model: the example request.

A model of one input gets an all-zero example of its shape; a table (one [batch, 1] input per
column, text as BYTES) gets a typical row: each category the first one seen in training, each
number the training mean (zoo.columns metadata). tests/test_serve.py runs the curl command
and the tritonclient program exactly as the card prints them, against a real `zoo serve`.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo.core.contract import INPUT_NAME, META_COLUMNS, STRING, TRITON_DIR, Contract
from zoo.deploy import triton
from zoo.deploy.defaults import GRPC_PORT, HTTP_PORT, METRICS_PORT
from zoo.deploy.templates import template

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the version nvidia-pytriton 0.7 bundles


def example_rows(columns: list[dict]) -> dict[str, list]:
    """{input name: [typical value, None]} from zoo.columns metadata."""
    def typical(c):
        if c["dtype"] == "string":
            return c["categories"][0] if c.get("categories") else ""
        return round(float(c.get("mean", 0.0)), 3)

    return {c["input"]: [typical(c), None] for c in columns}


def request_inputs(c: Contract) -> list[dict]:
    """The `inputs` of one example request in the protocol's JSON (a table: its typical row)."""
    if not c.is_table:
        return [{"name": INPUT_NAME, "shape": [1, *c.input_shape], "datatype": c.oip_dtype(INPUT_NAME),
                 "data": [0] * c.example_size}]
    rows = example_rows(c.metadata.get(META_COLUMNS) or [])
    return [{"name": name, "shape": [1, 1], "datatype": c.oip_dtype(name), "data": [rows[name][0]]}
            for name, _, _ in c.columns]


def curl_command(c: Contract, host="localhost", port=HTTP_PORT) -> str:
    """One inference request in the Open Inference Protocol's JSON, as a curl command.

    The card prints it, and so does zoo serve once it is up.
    """
    body = json.dumps({"inputs": request_inputs(c)}).replace("'", "'\\''")  # inside a single-quoted word
    return f"curl -s {host}:{port}/v2/models/{c.name}/infer -H 'Content-Type: application/json' -d '{body}'"


def client_program(c: Contract) -> str:
    """The same request with tritonclient (a table: its typical row and a row of missing values)."""
    if c.is_table:
        return template("card_table_serve_client.py.txt").substitute(
            rows_py=repr(example_rows(c.metadata.get(META_COLUMNS) or [])), http_port=HTTP_PORT, name=c.name,
            strings_py=repr(sorted(n for n, d, _ in c.columns if d == STRING)), last_output=c.outputs[-1])
    return template("card_serve_client.py.txt").substitute(
        http_port=HTTP_PORT, shape_tuple=(1, *c.input_shape), input_dtype=c.input_dtype, input_name=INPUT_NAME,
        oip_dtype=c.oip_dtype(INPUT_NAME), name=c.name, last_output=c.outputs[-1])


def _what_goes_in(c: Contract) -> str:
    if c.is_table:
        return ("one [1, 1] input per column: text as BYTES, numbers as FP32; JSON has no NaN, so a missing "
                "number goes as binary data, as tritonclient below sends it")
    return f"`{INPUT_NAME}` is {c.oip_dtype(INPUT_NAME)} {[1, *c.input_shape]}, raw values, row-major"


def serve_section(c: Contract, run=None) -> str:
    """The card's "Serve it" section: zoo serve, curl, tritonclient, and a stock Triton server."""
    run_arg = f"exports/{c.name}" if run is None else f"exports/{Path(run).name}"
    ports = " ".join(f"-p {p}:{p}" for p in (HTTP_PORT, GRPC_PORT, METRICS_PORT))
    numpy1 = "; a table also needs NumPy 1 for the server's stub: README, Serving" if c.is_table else ""
    labels = f", `{triton.LABELS}`" if c.is_classifier else ""
    return f"""
## Serve it (Triton, Open Inference Protocol)

`zoo serve` runs a real Triton Inference Server through PyTriton (`pip install -e '.[serve]'`
and `pip install --no-deps 'nvidia-pytriton==0.7.0'`{numpy1}), with REST on port {HTTP_PORT}, gRPC
on {GRPC_PORT} and Prometheus metrics on {METRICS_PORT}:

```bash
zoo serve {run_arg}
```

One request in the protocol's JSON ({_what_goes_in(c)}):

```bash
{curl_command(c)}
```

The same with `tritonclient` (`pip install 'tritonclient[http]'`):

```python
{client_program(c)}
```

On a stock Triton server: `zoo export {run_arg} --triton` writes a model repository
(`{run_arg}/{TRITON_DIR}/{c.name}/{triton.CONFIG}`, `{triton.VERSION}/{triton.MODEL_FILE}`{labels}; give `--triton REPO` to
share one repository between runs), which Triton's onnxruntime backend serves as it is:

```bash
docker run --rm {ports} -v "$PWD/{run_arg}/{TRITON_DIR}:/models" {TRITON_IMAGE} tritonserver --model-repository=/models
```
"""
