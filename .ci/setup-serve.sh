#!/usr/bin/env bash
# zoo serve's parts. nvidia-pytriton 0.7 (bundles Triton 2.51) is installed without its
# dependencies because it declares numpy<2 while zoo needs numpy>=2; its real runtime
# dependencies are in the `serve` extra, and zoo.serve works around the stub's NumPy-1 ABI.
# Its wheel is Linux x86_64 only. nginx goes in front of Triton's REST port to limit request
# bodies (Triton 2.51 dies on one of ~4 MiB). Idempotent; assumes `apt-get update` ran.
set -euo pipefail
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
    pip show nvidia-pytriton >/dev/null 2>&1 || pip install --no-deps 'nvidia-pytriton==0.7.0'  # the pip .ci/run uses
else
    echo "setup-serve: no nvidia-pytriton wheel for $(uname -sm); the serve tests will skip"
fi
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx-light \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx
    # zoo serve starts its own nginx; the distribution's service is not wanted
    if command -v service >/dev/null; then service nginx stop >/dev/null 2>&1 || true; fi
fi
