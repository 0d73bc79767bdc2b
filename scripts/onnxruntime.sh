#!/usr/bin/env bash
# Puts ONNX Runtime's shared library where auroraq finds it without any variable:
# .auroraq/onnxruntime/libonnxruntime.so, taken from the PyPI onnxruntime wheel (onnxruntime/capi/).
# ORT_DYLIB_PATH still overrides it at run time. Set AURORAQ_ORT_PACKAGE=onnxruntime-gpu for the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${AURORAQ_ORT_VERSION:-1.31.1}"
package="${AURORAQ_ORT_PACKAGE:-onnxruntime}"
dest=.auroraq/onnxruntime
stamp="$dest/.installed-$package-$version"
if [ -f "$stamp" ] && [ -f "$dest/libonnxruntime.so" ]; then
  exit 0
fi
py=$(command -v python3 || true)
if [ -z "$py" ] || ! "$py" -m pip --version >/dev/null 2>&1; then
  echo "[onnxruntime] installing python3-pip (needed to fetch the $package wheel)" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
  py=$(command -v python3)
fi
mkdir -p .auroraq/wheels "$dest"
echo "[onnxruntime] fetching $package==$version from PyPI" >&2
"$py" -m pip download --quiet --no-deps --only-binary=:all: "$package==$version" -d .auroraq/wheels
wheel=$(ls -t .auroraq/wheels/"${package//-/_}"-"$version"-*.whl | head -n1)
"$py" - "$wheel" "$dest" <<'PY'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    libs = [n for n in z.namelist() if n.startswith("onnxruntime/capi/") and ".so" in n and "pybind11" not in n]
    if not any("libonnxruntime.so" in n for n in libs):
        sys.exit(f"no libonnxruntime.so in {wheel}")
    for n in libs:
        target = os.path.join(dest, os.path.basename(n))
        with z.open(n) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        if os.path.basename(n).startswith("libonnxruntime.so."):
            link = os.path.join(dest, "libonnxruntime.so")
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(os.path.basename(n), link)
PY
rm -f "$dest"/.installed-*
touch "$stamp"
echo "[onnxruntime] installed $(readlink "$dest/libonnxruntime.so") in $dest" >&2
