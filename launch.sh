#!/usr/bin/env bash
# Launches the Yosinski et al. 2014 grid of nets (locally or on SLURM), or the one-command demo.
# The logic lives in keras_transfer/grid/ (the demo in grid/demo.py); this wrapper picks the Python
# and sets up .venv for the demo.
set -euo pipefail
# The grid runs in the caller's directory (relative --workdir and --flagfile are the caller's);
# the demo runs in the repository, where bootstrap.sh, flags/, data/ and runs/ are.
repo=$(cd "$(dirname "$0")" && pwd)

usage() {
  cat <<'EOF'
Usage:
  ./launch.sh demo [grid options] [-- flags for main]
      The main job on the embedded default (Fashion-MNIST, random splits 0 to 3): sets up
      .venv (./bootstrap.sh), prepares the data into data/, trains per split baseA, baseB,
      for n = 1..7 BnB, BnB+, AnB, AnB+ (every net on half B, so each comparison is within
      one half) and the convergence control (baseA and baseB again on a schedule twice as
      long) into runs/, writes the report to runs/report/, prints the paper's findings with
      95% CIs, the bases' convergence and where figure2.png and summary.md are.
      --splits=0,1 runs fewer splits; --experiments=transfer,convergence,random adds the
      random-features control R nB on half B of the first split (the demo prepares only random
      splits; the grid's default control, the paper's, trains baseA and R nA on the whole
      dataset: --random_control=whole after `python -m data_prep --split=whole`). Re-running
      it resumes: finished nets are skipped. --model=NAME trains another network the same way
      (main's --model, e.g. resnet_small: batch normalisation and residual blocks, n = 1..5
      cut points; or a network of your own, --model=file.py:function) into runs_NAME/, with
      its report in runs_NAME/report/. --workdir=DIR trains, analyses and reports in DIR;
      --dry_run prints the nets' commands and compute and prepares nothing. The steps are
      keras_transfer/grid/demo.py.

  ./launch.sh [--backend=local|slurm] [--jobs=N] [--splits=0,1] [--seeds=0] [--dry_run]
              [--flagfile=F] [--experiments=transfer,random,dissimilar,reduced] ... [-- flags for main]
      The grid. Every option is described below.

Environment: PYTHON (default .venv/bin/python, else python3).
EOF
}

if [ -n "${PYTHON:-}" ]; then
  python=$PYTHON
elif [ -x "$repo/.venv/bin/python" ]; then
  python=$repo/.venv/bin/python
else
  python=python3
fi

demo() {
  # The demo's logic is keras_transfer/grid/demo.py; here only what needs no Python: set-up. Its
  # options are checked first whenever a Python with the package is at hand (a typo stops the
  # demo before set-up); on a fresh machine the same check runs right after set-up.
  local arg
  for arg in "$@"; do
    case "$arg" in -h|--help) usage; exit 0 ;; --) break ;; esac
  done
  cd "$repo"
  if "$python" -c "import absl, keras_transfer" 2>/dev/null; then
    "$python" -m keras_transfer.grid.demo --check_args "$@"
  fi
  ./bootstrap.sh
  exec .venv/bin/python -m keras_transfer.grid.demo "$@"
}

case "${1:-}" in
  -h|--help|help)
    usage
    echo
    echo "Grid options:"
    "$python" -m keras_transfer.grid --help | sed -n '/^options:/,$p'
    ;;
  demo)
    shift
    demo "$@"
    ;;
  *)
    exec "$python" -m keras_transfer.grid "$@"
    ;;
esac
