"""card.md: what the model is, its data, its metrics, and how to call the ONNX file."""

from __future__ import annotations

from . import runs
from .contract import BATCH_DIM, INPUT_NAME, output_names


def write_card(run, spec, metrics, opset) -> None:
    m = spec.model
    shape = [BATCH_DIM, *m.input_shape]
    np_dtype = "np.uint8" if m.input_dtype == "uint8" else "np.float32"
    test = ", ".join(f"{k} {v:.4f}" for k, v in ((metrics or {}).get("test") or {}).items()) or "not recorded"
    outs = output_names(spec.is_classifier)
    out_desc = ("`logits` (batch, num_classes) and `probabilities` (softmax of the logits)"
                if spec.is_classifier else f"`predictions` (batch, {spec.num_outputs})")
    layers = " → ".join([f"{m.input_shape} {m.input_dtype}"] + [str(h.units) for h in m.hidden] + [str(spec.num_outputs)])
    classes = f"\nClasses: {', '.join(m.class_names)}\n" if m.class_names else ""
    ort_type = "uint8_t" if m.input_dtype == "uint8" else "float"
    js_array = "Uint8Array" if m.input_dtype == "uint8" else "Float32Array"
    n = 1
    for d in m.input_shape:
        n *= d
    text = f"""# {spec.name}

{spec.description or 'A zoo model.'}

- kind: {m.kind} ({layers})
- data: `{spec.data.dataset}`{f' ({spec.data.path})' if spec.data.path else ''}
- training: {spec.train.optimizer}, learning rate {spec.train.learning_rate}, batch {spec.train.batch_size}, {spec.train.epochs} epochs, seed {spec.train.seed}
- test metrics: {test}
- ONNX: opset {opset}; input `{INPUT_NAME}` {shape} {m.input_dtype}, raw values (preprocessing is inside the graph); outputs {out_desc}
{classes}
Files: `model.onnx`, `model.keras`, `spec.json`, `metrics.json`, `verify.json`, and
`test_data_set_0/` (input_0.pb, output_0.pb, ...: TensorProtos to check any runtime).

## Python (onnxruntime)

```python
import numpy as np, onnxruntime as ort
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
x = np.zeros(({', '.join(['1'] + [str(d) for d in m.input_shape])}), dtype={np_dtype})
{', '.join(outs)} = session.run({outs!r}, {{"{INPUT_NAME}": x}})
```

## C++ (onnxruntime C++ API)

```cpp
#include <onnxruntime_cxx_api.h>
Ort::Env env;
Ort::Session session(env, "model.onnx", Ort::SessionOptions{{}});
std::vector<{ort_type}> x({n});                       // one example, row-major
std::array<int64_t, {len(shape)}> shape{{1, {', '.join(map(str, m.input_shape))}}};
auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
auto input = Ort::Value::CreateTensor<{ort_type}>(memory, x.data(), x.size(), shape.data(), shape.size());
const char* in[] = {{"{INPUT_NAME}"}};
const char* out[] = {{{', '.join(f'"{o}"' for o in outs)}}};
auto results = session.Run(Ort::RunOptions{{}}, in, &input, 1, out, {len(outs)});
```

## JavaScript (onnxruntime-web or onnxruntime-node)

```js
const ort = require("onnxruntime-node");  // or: import * as ort from "onnxruntime-web"
const session = await ort.InferenceSession.create("model.onnx");
const x = new ort.Tensor("{m.input_dtype}", new {js_array}({n}), [1, {', '.join(map(str, m.input_shape))}]);
const results = await session.run({{ {INPUT_NAME}: x }});
console.log(results.{outs[-1]}.data);
```
"""
    from .contract import Contract
    from .triton import card_section

    text += card_section(Contract.from_spec(spec), run)  # "Serve it": zoo serve, curl, tritonclient, Triton
    runs.write_text(run / "card.md", text)
