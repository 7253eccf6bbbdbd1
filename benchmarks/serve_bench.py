"""zoo serve (Triton through PyTriton) against a peer server and in-process onnxruntime.

Single-example requests over REST (the protocol's JSON) and gRPC at concurrency 1, 8 and
32, on loopback. Every server serves the same model.onnx; the same client code
(aiohttp posting the protocol's JSON; tritonclient's asyncio gRPC client) drives each of them, so the figures
compare servers, not clients. Reported per row: requests/s, p50 and p99 latency (the
medians over --repeats runs of --seconds each), and zoo serve's throughput as a ratio of
the peer's at the same protocol and concurrency.

- zoo serve: `python -m zoo serve RUN` (Triton 2.51, dynamic batching, its Python backend running
  onnxruntime in 2 stub processes; REST through the nginx edge).
- peer: KServe's ModelServer (`pip install kserve`, not a zoo dependency) with a kserve.Model
  whose predict runs the same onnxruntime session: KServe's documented custom-predictor path.
- in-process: `session.run` on one example from C threads: no server at all, the ceiling.

Usage:
    nice python benchmarks/serve_bench.py [--run exports/digits-mlp] [--seconds 3] [--repeats 3]
With no --run it trains specs/digits-mlp.json for one epoch into a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "TF_CPP_MIN_LOG_LEVEL": "3"}
CONCURRENCY = (1, 8, 32)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_ready(url, proc, log, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {Path(log).read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.3)
    raise RuntimeError(f"not ready in {timeout} s: {Path(log).read_text()[-2000:]}")


@contextlib.contextmanager
def server(cmd, ready_url, log):
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=ENV, stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_ready(ready_url, proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ----- the peer: KServe ModelServer with an onnxruntime predictor --------------------------

def kserve_main(onnx_path, name, http_port, grpc_port):
    import kserve
    import onnxruntime as ort
    from kserve.protocol.infer_type import InferOutput, InferResponse

    from zoo.core.contract import INPUT_NAME, Contract

    contract = Contract.from_onnx(onnx_path)
    outputs = list(contract.outputs)

    class OnnxModel(kserve.Model):
        def __init__(self):
            super().__init__(name)
            self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            self.ready = True

        def predict(self, payload, headers=None, response_headers=None):
            x = payload.get_input_by_name(INPUT_NAME).as_numpy()
            results = self.session.run(outputs, {INPUT_NAME: x})
            return InferResponse(response_id=payload.id or "", model_name=name, infer_outputs=[
                InferOutput(name=o, shape=list(r.shape), datatype="FP32", data=r) for o, r in zip(outputs, results)])

    kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1,
                       enable_latency_logging=False).start([OnnxModel()])


# ----- load ------------------------------------------------------------------------------

async def drive(make_call, concurrency, seconds):
    """Run `concurrency` workers issuing requests back to back for `seconds`; latencies in seconds."""
    latencies, stop = [], time.perf_counter() + seconds

    async def worker():
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await make_call()
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0


async def measure_protocol(protocol, address, name, x, concurrency, seconds):
    if protocol == "rest":  # the protocol's JSON over aiohttp: what any HTTP client sends
        import aiohttp

        body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        url = f"http://{address}/v2/models/{name}/infer"
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(CONCURRENCY)),
                                        headers={"Content-Type": "application/json"})

        async def call():
            async with session.post(url, data=body) as r:
                answer = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{r.status}: {answer[:200]!r}")

        close = session.close
    else:
        import tritonclient.grpc.aio as grpcclient

        client = grpcclient.InferenceServerClient(address)
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)

        async def call():
            await client.infer(name, [inp])

        close = client.close
    try:
        await drive(call, concurrency, min(1.0, seconds))  # warm up connections and the model
        return await drive(call, concurrency, seconds)
    finally:
        await close()


def in_process(onnx_path, x, concurrency, seconds):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    latencies, lock = [], threading.Lock()
    for _ in range(100):
        session.run(None, {"input": x})
    stop = time.perf_counter() + seconds

    def worker():
        mine = []
        while time.perf_counter() < stop:
            t = time.perf_counter()
            session.run(None, {"input": x})
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - t0


def summary(samples):
    """Medians over repeats of requests/s, p50 and p99 (ms)."""
    rates = [len(lat) / wall for lat, wall in samples]
    p50 = [float(np.percentile(lat, 50)) * 1e3 for lat, _ in samples]
    p99 = [float(np.percentile(lat, 99)) * 1e3 for lat, _ in samples]
    return {"rps": statistics.median(rates), "p50_ms": statistics.median(p50), "p99_ms": statistics.median(p99),
            "requests": sum(len(lat) for lat, _ in samples)}


def machine():
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import onnxruntime

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "os": platform.platform()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="an exported run [default: train specs/digits-mlp.json, 1 epoch]")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--kserve-peer", nargs=4, metavar=("ONNX", "NAME", "HTTP", "GRPC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kserve_peer:
        onnx_path, name, http_port, grpc_port = args.kserve_peer
        sys.argv = sys.argv[:1]  # kserve parses sys.argv for its own defaults
        return kserve_main(onnx_path, name, int(http_port), int(grpc_port))

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        bench(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(args, tmp):
    run = args.run
    if run is None:
        subprocess.run([sys.executable, "-m", "zoo", "run", str(ROOT / "specs" / "digits-mlp.json"), "--epochs", "1",
                        "--quiet", "--out", str(tmp / "exports")], check=True, env=ENV, cwd=ROOT)
        run = tmp / "exports" / "digits-mlp"
    from zoo.core.contract import Contract

    onnx_path = run / "model.onnx"
    contract = Contract.from_onnx(onnx_path)
    name = contract.name
    x = np.zeros((1, *contract.input_shape), dtype=contract.input_dtype)
    if contract.input_dtype != "float32":
        raise SystemExit("this benchmark sends FP32; give a run with float32 input")

    results = []

    def record(server_name, protocol, c, samples):
        row = {"server": server_name, "protocol": protocol, "concurrency": c, **summary(samples)}
        results.append(row)
        print(f"{server_name:<12} {protocol:<7} c={c:<3} {row['rps']:9.0f} req/s  p50 {row['p50_ms']:7.2f} ms  "
              f"p99 {row['p99_ms']:7.2f} ms", flush=True)

    for c in CONCURRENCY:
        record("onnxruntime", "in-proc", c, [in_process(onnx_path, x, c, args.seconds) for _ in range(args.repeats)])

    http_port, grpc_port, metrics_port = free_ports(3)
    zoo_cmd = [sys.executable, "-m", "zoo", "serve", str(run), "--port", str(http_port), "--grpc-port",
               str(grpc_port), "--metrics-port", str(metrics_port)]
    peer_cmd = [sys.executable, __file__, "--kserve-peer", str(onnx_path), name, str(http_port), str(grpc_port)]
    ready = f"http://127.0.0.1:{http_port}/v2/models/{name}/ready"  # the model, not just the server
    for server_name, cmd in (("zoo serve", zoo_cmd), ("kserve", peer_cmd)):
        with server(cmd, ready, tmp / f"{server_name.replace(' ', '-')}.log"):
            for protocol, address in (("rest", f"127.0.0.1:{http_port}"), ("grpc", f"127.0.0.1:{grpc_port}")):
                for c in CONCURRENCY:
                    samples = [asyncio.run(measure_protocol(protocol, address, name, x, c, args.seconds))
                               for _ in range(args.repeats)]
                    record(server_name, protocol, c, samples)
        time.sleep(2)  # let the ports go

    peer = {(r["protocol"], r["concurrency"]): r for r in results if r["server"] == "kserve"}
    print()
    print(f"model: {name} ({onnx_path}), input {list(x.shape)} {contract.input_dtype}; "
          f"{args.repeats} repeats of {args.seconds:g} s, medians")
    print(f"machine: {json.dumps(machine())}")
    print()
    print("| server | protocol | concurrency | req/s | p50 ms | p99 ms | req/s vs KServe |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        ratio = ""
        if r["server"] == "zoo serve":
            ratio = f"{r['rps'] / peer[(r['protocol'], r['concurrency'])]['rps']:.2f}x"
        print(f"| {r['server']} | {r['protocol']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "model": name, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
