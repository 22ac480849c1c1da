"""The paper's experiment as a grid of `python -m keras_transfer.main` runs, and how to launch it.

nets: which nets the experiments need, each with the base nets it copies from.
plan: the nets plus main's resolved preset, as packs (nets one process trains together),
commands and run directories.
local, slurm: the backends (here, N processes at a time; or sbatch job arrays), both resumable.
cost: `--dry_run`, the commands and the compute they need. errors: GridError.
__main__: the command line, `python -m keras_transfer.grid` (launch.sh wraps it).
"""
from keras_transfer.grid.cost import (CAFFENET_MULTIPLY_ADDS, TRAIN_FLOPS_PER_MULTIPLY_ADD,
                                      dry_run, images_per_net, multiply_adds)
from keras_transfer.grid.errors import GridError
from keras_transfer.grid.local import run_local
from keras_transfer.grid.nets import (DEFAULT_EXPERIMENTS, EXPERIMENTS, PlannedNet, base_keys,
                                      dissimilar_split, enumerate_nets, packs,
                                      stages, transfer_set)
from keras_transfer.grid.plan import (GRID_OWNED_FLAGS, MODULE, Plan, make_plan, resolve_preset,
                                      stale_nets)
from keras_transfer.grid.slurm import (SLURM_TASK_SCRIPT, SlurmResources, sbatch_commands,
                                       submit_slurm)

# The command line is looked up on first use, not imported here: `python -m keras_transfer.grid`
# imports this package before it runs __main__, and runpy warns if __main__ is imported already.
_COMMAND_LINE = ("main", "run", "parser", "available_cores")

__all__ = ["CAFFENET_MULTIPLY_ADDS", "DEFAULT_EXPERIMENTS", "EXPERIMENTS", "GRID_OWNED_FLAGS",
           "GridError", "MODULE", "Plan", "PlannedNet", "SLURM_TASK_SCRIPT", "SlurmResources",
           "TRAIN_FLOPS_PER_MULTIPLY_ADD", "base_keys", "dissimilar_split",
           "dry_run", "enumerate_nets", "images_per_net", "make_plan", "multiply_adds",
           "resolve_preset", "packs", "run_local", "sbatch_commands", "stale_nets",
           "stages", "submit_slurm", "transfer_set", *_COMMAND_LINE]


def __getattr__(name):
    if name in _COMMAND_LINE:
        from keras_transfer.grid import __main__ as command_line
        return getattr(command_line, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_COMMAND_LINE))
