#!/usr/bin/env bash
# zoo serve's parts. nvidia-pytriton 0.7 (bundles Triton 2.51) is installed without its
# dependencies because it declares numpy<2 while zoo needs numpy>=2; its real runtime
# dependencies are in the `serve` extra. Its Python-backend stub was built for NumPy 1: zoo serve runs it
# with a NumPy 1 of its own, installed apart (zoo/deploy/serve/stub_env.py).
# Its wheel is Linux x86_64 only. nginx goes in front of Triton's REST port to limit request
# bodies (Triton 2.51 dies on one of ~4 MiB), with njs for 400s. Idempotent; assumes `apt-get update` ran.
set -euo pipefail
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
    pip show nvidia-pytriton >/dev/null 2>&1 || pip install --no-deps 'nvidia-pytriton==0.7.0'  # the pip .ci/run uses
    # NumPy 1 for the stub alone (zoo/deploy/serve/stub_env.py): its string (BYTES) inputs need it
    py="$(command -v python || command -v python3)"  # the interpreter of the pip above
    stub="$("$py" -c 'import sys; print(sys.prefix)')/zoo-triton-stub"
    [ -f "$stub/numpy/__init__.py" ] || pip install --no-deps --target "$stub" 'numpy==1.26.4' \
        || echo "setup-serve: no NumPy 1 wheel for this Python; zoo serve will refuse table models"
else
    echo "setup-serve: no nvidia-pytriton wheel for $(uname -sm); the serve tests will skip"
fi
# libnginx-mod-http-js: the edge's njs script turns Triton 2.51's 500 for an unparsable request into a 400
if [ ! -f /usr/lib/nginx/modules/ngx_http_js_module.so ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx-light libnginx-mod-http-js \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx libnginx-mod-http-js
    # zoo serve starts its own nginx; the distribution's service is not wanted
    if command -v service >/dev/null; then service nginx stop >/dev/null 2>&1 || true; fi
fi
