#!/usr/bin/env bash
# What building AuroraQ needs beyond Rust: cmake (the Kafka bus builds librdkafka from its bundled
# sources with it; a C compiler comes with Rust's usual setup). Installs Debian's cmake if missing.
# Called by scripts/setup.sh and scripts/test.sh.
set -euo pipefail
if ! command -v cmake >/dev/null; then
  SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "[build-deps] installing cmake (Debian) for librdkafka" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake >/dev/null
fi
command -v cc >/dev/null || command -v gcc >/dev/null ||
  { echo "[build-deps] a C compiler (cc) is needed to build librdkafka: install build-essential" >&2; exit 1; }
