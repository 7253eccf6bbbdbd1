#!/usr/bin/env bash
# zoo serve's Triton: nvidia-pytriton 0.7 (bundles Triton 2.51). Installed without its
# dependencies because it declares numpy<2 while zoo needs numpy>=2; its real runtime
# dependencies are in the `serve` extra, and zoo.serve works around the stub's NumPy-1 ABI.
# Linux x86_64 only (its wheel is manylinux_2_35_x86_64). Idempotent.
set -euo pipefail
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || { echo "setup-serve: no nvidia-pytriton wheel for $(uname -sm)"; exit 0; }
python -m pip show nvidia-pytriton >/dev/null 2>&1 || python -m pip install --no-deps 'nvidia-pytriton==0.7.0'
