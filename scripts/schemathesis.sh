#!/usr/bin/env bash
# Installs schemathesis (PyPI) into .auroraq/st-venv if it is missing: the API's OpenAPI property run
# (pipeline/api/tests/rest.rs) drives it. Never fails the caller: without it that test skips, saying why.
set -uo pipefail
cd "$(dirname "$0")/.."
venv=.auroraq/st-venv
[ -x "$venv/bin/schemathesis" ] && exit 0
echo "[schemathesis] installing into $venv for the OpenAPI property run" >&2
{ python3 -m venv "$venv" && "$venv/bin/pip" install -q "schemathesis>=4,<5"; } >/dev/null 2>&1 ||
    echo "[schemathesis] could not install it: the OpenAPI property run will skip" >&2
exit 0
