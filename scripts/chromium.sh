#!/usr/bin/env bash
# Installs Debian's headless-capable chromium if it is missing (the report's browser test renders
# out/report/report.html with it). Never fails the caller: without chromium that test skips,
# saying why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[chromium] installing Debian's chromium for the report's browser test" >&2
    (apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
        { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }) ||
        echo "[chromium] could not install chromium: the browser test will skip" >&2
else
    echo "[chromium] not installed and cannot install it here (needs root and apt-get): the browser test will skip" >&2
fi
exit 0
