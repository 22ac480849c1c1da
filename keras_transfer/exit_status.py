"""The exit statuses of `python -m keras_transfer.main` beyond 1 (files) and 2 (bad input),
which its launchers act on. No TensorFlow here: the grid's local workers read them.
"""
from __future__ import annotations

import signal

# Signals that stop a run resumably: SIGTERM (SLURM's preemption, the launcher's stop) and
# SIGINT (Ctrl-C). Caught while training, main saves a backup at the current step and exits
# 128 + the signal; started again, the run resumes.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PREEMPTED = 128 + signal.SIGTERM  # 143
INTERRUPTED = 128 + signal.SIGINT  # 130
DIVERGED = 3  # a net's loss or weights became NaN or infinite (see train.Diverged)
LOST_WORKER = 4  # a worker of a multi-worker run died or cannot be reached

