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
DIVERGED = 3  # a net's loss or weights became NaN or infinite (see divergence.Diverged)
LOST_WORKER = 4  # a worker of a multi-worker run died or cannot be reached


def stopped(code: int) -> str | None:
    """How a run that ended with `code` (a Popen returncode, negative for a signal's death) was
    stopped resumably, or None if it was not. Stops: a SIGTERM or SIGINT that main caught (143
    always after a backup at that step, 130 too when it came during training), and one that
    killed the run where main does not catch it (while Python and TensorFlow load). Either way
    the run resumes from its last backup, if any. SIGKILL is not a stop (the OOM killer, a
    user): the launcher reports that run failed."""
    if code == PREEMPTED:
        return "stopped by SIGTERM with a backup saved"
    if code == INTERRUPTED:
        return "stopped by SIGINT"
    if -code in STOP_SIGNALS:
        return f"killed by {signal.Signals(-code).name} before main could catch it"
    return None
