#!/usr/bin/env bash
# Sets up everything the project needs on a fresh machine, idempotently:
#   - a virtualenv in .venv with the pinned packages (requirements.lock) and this package,
#   - Debian's dataset-fashion-mnist (the embedded default dataset) when running as root,
#   - with --with-slurm only: Debian's slurm-wlm and munge, system-wide, for the local SLURM
#     cluster the SLURM tests start (keras_transfer/grid/slurm_cluster.py), when running as
#     root; without them those tests skip. Nothing else needs them (not the demo).
# Safe to run again: finished steps are skipped.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./bootstrap.sh [--with-slurm]
  Sets up .venv (requirements.lock and this package) and, as root, Debian's
  dataset-fashion-mnist. Safe to run again.
  --with-slurm   also install Debian's slurm-wlm and munge system-wide (as root): the local
                 SLURM cluster of the SLURM tests (tests/test_slurm.py); without them they skip
  -h, --help     show this and exit
EOF
}

with_slurm=0
for arg in "$@"; do
  case "$arg" in
    --with-slurm) with_slurm=1 ;;
    -h|--help) usage; exit 0 ;;
    *) printf 'bootstrap.sh: unknown option %s; usage: ./bootstrap.sh [--with-slurm] (see --help)\n' \
         "$arg" >&2
       exit 2 ;;
  esac
done

cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
FASHION_DIR=/usr/share/datasets/fashion-mnist

say() { printf '[bootstrap] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# The stamp records which lock file and setup.py were installed, so edits re-install.
stamp="$VENV/.installed"
want=$(cat requirements.lock setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing pinned packages (requirements.lock) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r requirements.lock
  "$VENV/bin/python" -m pip install --quiet --no-deps -e '.[test]'
  echo "$want" > "$stamp"
else
  say "virtualenv up to date"
fi

if [ ! -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian package dataset-fashion-mnist"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    say "Fashion-MNIST is missing from $FASHION_DIR."
    say "Install it as root:  apt-get update && apt-get install -y dataset-fashion-mnist"
    say "(or pass --source_dir to data_prep if you have the IDX files elsewhere)"
  fi
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [ "$with_slurm" = 0 ]; then
    say "slurm-wlm and munge are not installed: the SLURM tests will skip (./bootstrap.sh --with-slurm installs them, as root)"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages slurm-wlm and munge (a local SLURM cluster for the tests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; } \
      || say "slurm-wlm and munge could not be installed: the SLURM tests will skip"
  else
    say "slurm-wlm and munge are not installed: the SLURM tests will skip"
    say "(as root: apt-get install -y slurm-wlm munge)"
  fi
fi
say "ready: $VENV/bin/python"
