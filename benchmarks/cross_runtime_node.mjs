// Node side of benchmarks/cross_runtime.py: run model.onnx with onnxruntime-node on a raw
// input file, `repeats` timed calls, and write the outputs and the timings as JSON.
//   node cross_runtime_node.mjs MODEL.onnx INPUT.bin DTYPE DIMS_JSON REPEATS OUT.json
//   node cross_runtime_node.mjs MODEL.onnx INPUT.json table [] REPEATS OUT.json   (a table model)
import * as ort from "onnxruntime-node";
import { readFileSync, writeFileSync } from "node:fs";

const [model, inputPath, dtype, dimsJson, repeatsText, outPath] = process.argv.slice(2);
const session = await ort.InferenceSession.create(model, { executionProviders: ["cpu"] });
let feeds;
if (dtype === "table") { // INPUT.json: {name: {dtype, dims, data}}, one per column; null is NaN
  const inputs = JSON.parse(readFileSync(inputPath, "utf8"));
  feeds = Object.fromEntries(Object.entries(inputs).map(([n, t]) => [n, t.dtype === "string"
    ? new ort.Tensor("string", t.data, t.dims)
    : new ort.Tensor("float32", Float32Array.from(t.data, (v) => v ?? NaN), t.dims)]));
} else {
  const dims = JSON.parse(dimsJson);
  const bytes = readFileSync(inputPath);
  const copy = new Uint8Array(bytes).buffer; // aligned
  const data = dtype === "uint8" ? new Uint8Array(copy) : new Float32Array(copy);
  feeds = { [session.inputNames[0]]: new ort.Tensor(dtype, data, dims) };
}
let results;
for (let i = 0; i < 5; i++) results = await session.run(feeds); // warm-up
const ms = [];
for (let i = 0; i < Number(repeatsText); i++) {
  const t0 = process.hrtime.bigint();
  results = await session.run(feeds);
  ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
const outputs = Object.fromEntries(session.outputNames.map((n) => [n, Array.from(results[n].data)]));
writeFileSync(outPath, JSON.stringify({ outputs, ms, version: ort.env.versions?.node ?? "" }));
