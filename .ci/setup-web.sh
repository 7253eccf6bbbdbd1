#!/usr/bin/env bash
# The browser, Node and C++ parts of tests/test_web.py, tests/test_card_snippets.py and
# benchmarks/cross_runtime.py. Idempotent; installs only. Everything lands in the system
# (chromium) or in folders .gitignore names (node_modules/, .deps/); the tests find them there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Headless Chromium for Playwright (never `playwright install`: it downloads a browser build).
if ! command -v chromium >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# onnxruntime-web (the page) and onnxruntime-node (the card's JavaScript), pinned. --ignore-scripts:
# onnxruntime-node's install script downloads optional extras; its CPU build ships in the package.
if [ ! -f node_modules/onnxruntime-web/package.json ] || [ ! -f node_modules/onnxruntime-node/package.json ]; then
    if ! command -v npm >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    npm install --ignore-scripts --no-save --no-package-lock --no-audit --no-fund \
        onnxruntime-web@1.30.0 onnxruntime-node@1.30.0 >/dev/null
fi

# onnxruntime's C/C++ headers for the card's C++ program. Neither the pip wheel nor npm ships
# them and bookworm has no package; Debian trixie's libonnxruntime-dev does (headers only are
# taken: they are architecture-independent text; the library comes from the pip wheel).
if [ ! -f .deps/onnxruntime/include/onnxruntime_cxx_api.h ]; then
    if [ -f /usr/include/onnxruntime/onnxruntime_cxx_api.h ]; then
        exit 0  # a system install: the tests look there too
    fi
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/lists/partial" "$tmp/archives/partial"
    # the Debian mirror this machine's apt already uses, with trixie in place of its own release
    mirror="$(apt-get indextargets --format '$(REPO_URI)' 2>/dev/null | grep -i debian | grep -v security | sort -u | head -n 1)"
    [ -n "$mirror" ] || { echo "setup-web: no Debian mirror configured for apt; C++ snippet test will skip" >&2; exit 0; }
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$tmp/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache::Archives=$tmp/archives"
              -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update -qq
    (cd "$tmp" && apt-get "${apt_opts[@]}" download libonnxruntime-dev >/dev/null)
    dpkg-deb -x "$tmp"/libonnxruntime-dev_*.deb "$tmp/root"
    mkdir -p .deps/onnxruntime
    rm -rf .deps/onnxruntime/include
    cp -r "$tmp/root/usr/include/onnxruntime" .deps/onnxruntime/include
fi
