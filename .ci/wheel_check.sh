#!/usr/bin/env bash
# Release check: build the wheel from this checkout, install it (not editable) in a fresh venv with the pinned torch
# first, and run two commands that need the packaged data files (the weights manifest and the training recipes).
# Exits non-zero when any step fails. Usage: .ci/wheel_check.sh [WORKDIR]  (default: a temporary folder, removed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-}"
if [ -z "$work" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/wheels"
python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
python -m pip install -q torch==2.13.0
python -m pip wheel -q --no-deps -w "$work/wheels" "$root"
wheel="$(ls "$work"/wheels/dcasenet_hub-*.whl)"
python - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
if not any(n.endswith("/LICENSE") or "licenses/LICENSE" in n for n in names):
    sys.exit("wheel check: the wheel carries no LICENSE file")
PY
python -m pip install -q "$wheel"
cd "$work"  # not the checkout: the installed wheel, not the source tree, must answer
python - <<'PY'
import dcasenet_hub, sys
if "site-packages" not in dcasenet_hub.__file__:
    sys.exit(f"wheel check: imported {dcasenet_hub.__file__}, not the installed wheel")
PY
dcasenet-hub list
dcasenet-hub train --list-recipes
echo "wheel check passed: $(basename "$wheel")"
