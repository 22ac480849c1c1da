#!/usr/bin/env bash
# Launches the Yosinski et al. 2014 grid of nets (locally or on SLURM), or the one-command demo.
# The logic lives in keras_transfer/grid/; this wrapper picks the Python and runs the demo steps.
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
      random-features control R nB on half B of the first split (the demo prepares only random splits; the grid's default control, the
      paper's, trains baseA and R nA on the whole dataset: --random_control=whole after
      `python -m data_prep --split=whole`). Re-running it resumes: finished nets are skipped.
      --model=NAME trains another network the same way (main's --model, e.g. resnet_small:
      batch normalisation and residual blocks, n = 1..5 cut points) into runs_NAME/, with its
      report in runs_NAME/report/.

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
  # The demo prepares random splits itself, so its --splits are integers; checked before set-up.
  local arg
  for arg in "$@"; do
    case "$arg" in
      --splits=*)
        if ! [[ ${arg#--splits=} =~ ^[0-9]+(,[0-9]+)*$ ]]; then
          echo "launch.sh: error: $arg: the demo trains on random splits; give their numbers," \
               "e.g. --splits=0,1 (the grid, ./launch.sh without demo, takes other splits)" >&2
          exit 2
        fi ;;
    esac
  done
  # --model=NAME is main's flag: it goes after `--`, and the nets into a folder of their own
  # (a report or a CKA prediction covers the nets of one network).
  local model="" own=() main=() seen_dashes=0
  for arg in "$@"; do
    if [ "$seen_dashes" = 1 ]; then
      case "$arg" in --model=*) model=${arg#--model=} ;; *) main+=("$arg") ;; esac
    elif [ "$arg" = "--" ]; then
      seen_dashes=1
    else
      case "$arg" in --model=*) model=${arg#--model=} ;; *) own+=("$arg") ;; esac
    fi
  done
  local runs=runs
  if [ -n "$model" ]; then
    main+=("--model=$model")
    [ "$model" = small ] || runs=runs_$model
  fi
  set -- "${own[@]}"
  [ ${#main[@]} -eq 0 ] || set -- "$@" -- "${main[@]}"
  cd "$repo"
  ./bootstrap.sh
  python=.venv/bin/python
  # The paper's nets on random splits, every one trained on half B (as the paper's fine-tuned
  # nets were), so that each comparison is made within one half; baseA is trained as the source
  # of AnB. Four splits (the paper's count, and enough for intervals that decide within the
  # 30 minutes on 2 cores) and the convergence control (baseA-x2, baseB-x2);
  # --experiments=transfer,convergence,random adds the random-features control on half B of the
  # first split (--random_control=half: the demo prepares random splits only).
  local splits=0,1,2,3
  for arg in "$@"; do
    case "$arg" in --splits=*) splits=${arg#--splits=} ;; esac
  done
  # A --random_control of the caller's replaces the demo's half-split control on its first split.
  local random=(--random_control=half --random_splits="${splits%%,*}")
  for arg in "$@"; do
    case "$arg" in --random_control=*) random=() ;; esac
  done
  local grid=(--flagfile=flags/fashion_mnist.flags --workdir="$runs" --splits="$splits" --seeds=0
              --experiments=transfer,convergence --targets=B "${random[@]}" "$@")
  # Every other option (--seeds, --layers, --jobs, flags for main, ...) is checked before any
  # data is prepared: a typo stops the demo at once (exit 2), not after the data preparation.
  "$python" -m keras_transfer.grid --check_args "${grid[@]}"
  local split
  for split in ${splits//,/ }; do
    if [ -f "data/fashion_mnist/random_$split/A/manifest.json" ] && [ -f "data/fashion_mnist/random_$split/B/manifest.json" ]; then
      echo "[demo] data/fashion_mnist/random_$split is prepared"
    else
      "$python" -m data_prep --source=fashion_mnist --split="random:$split" --out=data
    fi
  done
  local status=0
  "$python" -m keras_transfer.grid "${grid[@]}" || status=$?
  # Beyond the paper: per-layer CKA of the two bases against the measured transfer drop, and
  # their conv1 filters. Optional extras: a failure here does not fail the demo.
  "$python" -m keras_transfer.analyze predict "$runs" || echo "[demo] analyze predict failed; see above"
  "$python" -m keras_transfer.analyze filters "$runs/fashion_mnist/random_${splits%%,*}/seed0/base"{A,B} \
      || echo "[demo] analyze filters failed; see above"
  # The report is written even when some nets failed: it leaves missing ones out with a note.
  # It comes last so its summary.md includes the CKA prediction.
  "$python" -m keras_transfer.report "$runs"
  echo
  # The findings and the bases' convergence from summary.md: each heading down to the next.
  sed -n '/^## Findings/,/^## /p' "$runs/report/summary.md" | sed '$d'
  sed -n '/^## Convergence/,/^## /p' "$runs/report/summary.md" | sed '$d'
  echo "[demo] figure:  $repo/$runs/report/figure2.png"
  echo "[demo] table:   $repo/$runs/report/summary.md"
  echo "[demo] CKA vs transfer drop: $repo/$runs/report/predict.png"
  echo "[demo] training curves: $repo/.venv/bin/tensorboard --logdir $repo/$runs"
  return $status
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
