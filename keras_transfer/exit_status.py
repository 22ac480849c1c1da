"""The exit statuses of `python -m keras_transfer.main` beyond 1 (files) and 2 (bad input),
which its launchers act on. No TensorFlow here: the grid's local workers read them.
"""
import signal

# Stopped by SIGTERM (SLURM's preemption) after saving a backup: started again, it resumes.
PREEMPTED = 128 + signal.SIGTERM
DIVERGED = 3  # a net's loss or weights became NaN or infinite (see train.Diverged)
LOST_WORKER = 4  # a worker of a multi-worker run died or cannot be reached
