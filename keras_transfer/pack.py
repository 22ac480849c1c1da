"""The nets of a pack (several nets of one target half trained together, see steps.py; a net
alone is a pack of one): what they must share, each net's state while the pack trains, and how
one net leaves the pack without taking the others down."""
from __future__ import annotations

import dataclasses
import sys

from data_prep.locking import FileLock
from keras_transfer import progress, transfer
from keras_transfer import steps as steps_lib
from keras_transfer.backup import Backup
from keras_transfer.config import Config
from keras_transfer.resolve import Resolved, RunError
from keras_transfer.run_records import RunDir


def pack_key(config: Config) -> Config:
    """What the nets of one pack share: everything but which layers come from where."""
    return dataclasses.replace(config, source="none", n=0, finetune=False)


def check_pack(configs: list[Config], strategy) -> None:
    """RunError unless the configs can train together under `strategy`: one input stream
    (pack_key), each net once, a batch that splits evenly over the replicas."""
    names = [c.run for c in configs]
    if len({pack_key(c) for c in configs}) > 1:
        targets = " and ".join(sorted({c.target for c in configs}))
        raise RunError(f"{', '.join(names)} cannot train together: the nets of a pack share "
                       f"their input stream, so they must differ only in --source, --n and "
                       f"--finetune (same target half, data, seed and solver; targets here: "
                       f"{targets})")
    if len(set(names)) < len(names):
        raise RunError(f"a net is listed twice: {', '.join(names)}")
    replicas = strategy.num_replicas_in_sync
    if configs[0].batch_size % replicas:
        raise RunError(f"--batch_size={configs[0].batch_size} does not split evenly over the "
                       f"{replicas} replicas of {type(strategy).__name__}: give a multiple of "
                       f"{replicas}.")


@dataclasses.dataclass
class NetInTraining:
    """One net while its pack trains: its plan, files, model, optimizer and progress."""
    resolved: Resolved
    out: RunDir  # where this process writes: the run directory, or a non-chief's scratch
    lock: FileLock | None  # None on non-chief workers: the chief holds the run's lock
    label: str = ""  # the run's name on its console lines, when it shares them with packmates
    model: object = None
    optimizer: object = None
    plan: list = None
    backup: Backup = None
    history: progress.EvalHistory = None
    summaries: progress.Summaries = None
    start_step: int = 0
    start_digests: dict = None
    result: dict | None = None
    error: Exception | None = None

    @property
    def config(self) -> Config:
        return self.resolved.config

    def frozen_prefix(self) -> steps_lib.FrozenPrefix:
        """The net's frozen bottom blocks, named by their weights' hashes at the start, so that
        packmates with the same blocks share their forward pass."""
        cuts = transfer.frozen_prefix(self.model, self.config.model, self.plan)
        return steps_lib.FrozenPrefix(outputs=tuple(cut.output for cut in cuts),
                                      digests=tuple(self.start_digests[cut.name] for cut in cuts))


def fail(net: NetInTraining, error: Exception) -> None:
    """Takes a net out of its pack: it trains on in the compiled step, but writes nothing more."""
    net.error = error
    if net.label:  # alone, the caller reports it
        print(f"error: {net.config.run} stopped: {error}", file=sys.stderr, flush=True)


def per_net(nets, action) -> None:
    """Runs `action(net)` for each live net; an OSError fails that net alone."""
    for net in nets:
        if net.error is None:
            try:
                action(net)
            except OSError as e:
                fail(net, e)
