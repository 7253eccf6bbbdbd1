#!/usr/bin/env bash
# zoo sweep's PostgreSQL tests start their own throwaway server with initdb and pg_ctl
# from Debian's postgresql package (/usr/lib/postgresql/<ver>/bin). Installs only: a
# policy-rc.d keeps the package from starting its default cluster as a service.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    echo "setup-postgres: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')already there"
    exit 0
fi
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
ls -d /usr/lib/postgresql/*/bin
