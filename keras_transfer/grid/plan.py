"""The plan: the nets plus main's resolved preset, turned into commands and file paths.

The preset is resolved with main's own flag definitions (`config.resolve`), so the grid looks
for run directories exactly where main will write them and refuses flags main would refuse
before anything starts; the grid's own flags are kept out of the pass-through ones.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from data_prep import layout
from data_prep import manifest as manifest_lib
from data_prep.errors import DataPrepError
from keras_transfer import external_base, models, naming
from keras_transfer.grid.errors import GridError
from keras_transfer.grid import nets as nets_lib
from keras_transfer.grid.nets import PlannedNet
from keras_transfer.run_records import RunDir

# Flags of main the grid sets on every command; giving them after `--` would contradict the grid.
GRID_OWNED_FLAGS = ("source", "target", "n", "finetune", "nets", "split", "seed", "workdir",
                    "examples_per_class", "flagfile", "overwrite")
MODULE = "keras_transfer.main"


def flag_name(arg: str, booleans) -> str:
    """The name of a command-line flag (`--steps=100` -> steps), `--noNAME` read as NAME when
    NAME is among `booleans`."""
    name = arg.lstrip("-").split("=", 1)[0]
    return name[2:] if name.startswith("no") and name[2:] in booleans else name


def resolve_preset(flagfile: str | None, extra_flags: list[str]):
    """main's Config for the flagfile and pass-through flags, parsed with main's own flag definitions."""
    from keras_transfer import config
    for arg in extra_flags:
        name = flag_name(arg, GRID_OWNED_FLAGS)
        if not arg.startswith("-"):
            raise GridError(f"unexpected argument {arg!r} after `--`: only flags of "
                            f"keras_transfer.main go there (e.g. --steps=100)")
        if name in GRID_OWNED_FLAGS:
            raise GridError(f"--{name} is set by the grid for every net; use the grid's own option "
                            "(--splits, --seeds, --workdir, --flagfile, --experiments) instead of "
                            "passing it after `--`")
    if flagfile is not None and not Path(flagfile).is_file():
        raise GridError(f"flagfile {flagfile} does not exist; give a file of main's flags, "
                        "e.g. --flagfile=flags/fashion_mnist.flags")
    try:
        return config.resolve(flagfile, extra_flags)
    except config.ConfigError as e:
        raise GridError(f"main's flags do not parse: {e}") from e


def preset_architecture(preset) -> models.Architecture:
    """The network of main's preset, as each net's own process will find it (same directory,
    same environment); GridError naming why not."""
    if models.is_registered(preset.model):
        raise GridError(f"--model={preset.model} is registered in this process only "
                        "(keras_transfer.models.register); the grid's nets run in processes of "
                        "their own, which cannot see it: give it as module:function or "
                        "path/to/file.py:function")
    try:
        return models.get(preset.model)
    except models.ModelError as e:
        raise GridError(str(e)) from None


def check_own_model(preset, plan: "Plan") -> None:
    """A network from the user's code builds for the grid's data as the experiment needs
    (models.check_build, what main's resolve asks), before any net starts."""
    if models.is_builtin(preset.model):
        return
    from keras_transfer import data  # TensorFlow: only for a network of the user's own
    shape, classes, _ = plan.model_input(preset)
    crop = preset.crop or data.default_crop(preset.model, min(shape[0], shape[1]))
    try:
        models.check_build(preset.model, classes, (crop, crop, shape[2]))
    except models.ModelError as e:
        raise GridError(str(e)) from None


def check_external_base(preset, split: str, n_values) -> None:
    """main's check of --base_model (resolve.read_external) for the net that copies the most of
    its cut points, before anything is planned: loaded, each copied layer there with its shapes,
    at the crops of the split's half B if it is prepared, else at its own input. TensorFlow is
    imported only here, for a --base_model; imagenet is Keras's own file, not downloaded for this."""
    if not preset.base_model or external_base.kind_of(preset.base_model) == external_base.IMAGENET:
        return
    from data_prep import quiet_tensorflow
    quiet_tensorflow.import_tensorflow()
    from keras_transfer import resolve

    config = dataclasses.replace(preset, split=split, source="A", target="B", n=max(n_values))
    try:
        manifest = manifest_lib.load_manifest(config.half_dir("B"))
    except DataPrepError:
        manifest = None  # not prepared yet: the network alone is checked
    crop_shape = resolve.input_shape_of(config, manifest) if manifest else None
    # The head is never copied: any number of outputs checks the cut points.
    classes = preset.fc8_outputs or (manifest["num_classes"] if manifest else 2)
    try:
        resolve.read_external(config, crop_shape, classes)
    except resolve.RunError as e:
        raise GridError(str(e)) from None


@dataclasses.dataclass
class Plan:
    """The nets, and everything needed to turn one into a command and find its files."""
    nets: list
    workdir: str
    dataset: str
    data_dir: str
    flagfile: str | None
    extra_flags: list
    python: str = sys.executable
    threads: int = 0  # > 0: add --threads=N to every command (several local runs share the cores)
    # Most nets per process, per pack key (see nets.packs); nets of a missing key are not packed.
    pack_sizes: dict = dataclasses.field(default_factory=dict)
    # Nets to train again (--overwrite of stale or diverged nets): key -> the mtime of the
    # result.json they replace (None: none). Each trains alone, with main's --overwrite.
    retrain: dict = dataclasses.field(default_factory=dict)

    def pack_size(self, net: PlannedNet) -> int:
        return self.pack_sizes.get(net.pack_key, 1)

    def packs(self, nets) -> list[list[PlannedNet]]:
        """`nets` (some of the plan's) in packs, the plan's base nets alone."""
        alone = nets_lib.base_keys(self.nets) | set(self.retrain)
        return nets_lib.packs(nets, self.pack_size, alone)

    def command(self, pack) -> list[str]:
        """The command that trains one net, or a pack (a list of nets of one pack key)."""
        pack = [pack] if isinstance(pack, PlannedNet) else list(pack)
        cmd = [self.python, "-m", MODULE]
        if self.flagfile:
            cmd.append(f"--flagfile={self.flagfile}")
        cmd += self.extra_flags
        cmd.append(f"--workdir={self.workdir}")
        if len(pack) == 1:
            cmd += pack[0].main_flags()
        else:
            first = pack[0]
            cmd += [f"--split={first.split}", f"--seed={first.seed}",
                    f"--nets={','.join(net.name for net in pack)}", *first.shared_flags()]
        if self.threads and not any(a.lstrip("-").startswith("threads") for a in self.extra_flags):
            cmd.append(f"--threads={self.threads}")
        if len(pack) == 1 and pack[0].key in self.retrain:
            cmd.append("--overwrite")
        return cmd

    def run_dir(self, net_or_key) -> Path:
        split_dir, seed, name = net_or_key.key if isinstance(net_or_key, PlannedNet) else net_or_key
        return naming.run_dir(self.workdir, self.dataset, split_dir, seed, name)

    def run(self, net_or_key) -> RunDir:
        return RunDir(self.run_dir(net_or_key))

    def is_done(self, net_or_key) -> bool:
        """Whether the net is done (RunDir.is_done, main's rule), and not with the result this
        launch retrains."""
        key = net_or_key.key if isinstance(net_or_key, PlannedNet) else net_or_key
        run = self.run(key)
        if not run.is_done():
            return False
        return not (key in self.retrain and self.retrain[key] == run.result_mtime())

    def log_path(self, net: PlannedNet) -> Path:
        return Path(self.workdir) / "logs" / self.dataset / net.split_dir / f"seed{net.seed}" / f"{net.name}.log"

    def lock_path(self, net: PlannedNet) -> Path:
        return self.log_path(net).with_suffix(".lock")

    def pack_log_path(self, pack) -> Path:
        """The log of a pack's process (each net's own log points to it)."""
        first = pack[0]
        return self.log_path(first).with_name(f"pack-{first.name}+{len(pack) - 1}.log")

    def target_manifest(self, net: PlannedNet) -> dict | None:
        """The manifest of the net's target half, None while it is not prepared (or unreadable:
        main names the problem when the net needs it)."""
        try:
            return manifest_lib.load_manifest(
                layout.half_dir(self.data_dir, self.dataset, net.split_dir, net.target))
        except DataPrepError:
            return None

    def model_input(self, preset) -> tuple[list, int, str]:
        """(image shape, fc8's outputs, a note) the preset's model is built for: the first
        prepared half's, else the paper's 256 px photos or the 28 px default dataset's."""
        classes = preset.fc8_outputs or None
        for net in self.nets:
            manifest = self.target_manifest(net)
            if manifest is not None:
                return manifest["image_shape"], classes or manifest["num_classes"], ""
        shape = [256, 256, 3] if models.get(preset.model).crop_of_256 else [28, 28, 1]
        return shape, classes or 500, ", image size assumed (no manifest yet)"

    def missing_data(self) -> list[str]:
        """The data_prep commands still needed: one per (split, examples per class) without manifests."""
        needed = {}
        for net in self.nets:
            halves = {net.target} | ({net.source} if net.source in naming.HALVES else set())
            for half in halves:
                manifest = layout.manifest_path(self.data_dir, self.dataset, net.split_dir, half)
                if not manifest.is_file():
                    cmd = manifest_lib.prepare_command(self.data_dir, self.dataset, net.split,
                                                       net.examples_per_class)
                    needed[cmd + manifest_lib.placeholder_note(cmd)] = None
        return list(needed)


def stale_nets(plan: Plan, preset) -> dict:
    """Nets of the plan to train again only with --overwrite, with the reasons: finished nets
    whose result no longer answers for it (RunDir.why_stale: other settings, re-prepared
    data, a retrained base net), the finished dependants of such a base net, which will copy
    from the retrained one, and unfinished nets main refuses to resume (RunDir.why_not_resumable:
    they diverged, or their backup holds other or unknown settings)."""
    stale = {}
    for net in plan.nets:
        run = plan.run(net)
        config = dataclasses.replace(
            preset, split=net.split, seed=net.seed, source=net.source, target=net.target, n=net.n,
            finetune=net.finetune, examples_per_class=net.examples_per_class,
            steps=net.steps or preset.steps, lr_step=net.lr_step or preset.lr_step,
            stretch=net.stretch, workdir=plan.workdir)
        if not plan.is_done(net):
            if reason := run.why_not_resumable(config):  # main refuses to resume it
                stale[net.key] = [reason]
            continue
        try:
            target_manifest = manifest_lib.load_manifest(config.half_dir(net.target))
        except DataPrepError:
            target_manifest = None  # main names missing data when a net needs it
        reasons = run.why_stale(config, target_manifest)
        retrained = [key[2] for key in net.needs if key in stale]
        if retrained:
            reasons.append(f"its base net {', '.join(retrained)} is retrained")
        if reasons:
            stale[net.key] = reasons
    return stale


def make_plan(nets, preset, *, workdir=None, flagfile=None, extra_flags=(), threads=0,
              pack=1, processes=1) -> Plan:
    """`pack`: most nets per process; 0 chooses: for a model small enough that one net leaves
    a core's time to per-step overhead (its Architecture's `packed`), the nets of each pack key shared
    evenly over `processes`; otherwise one net per process."""
    nets = list(nets)
    bases = nets_lib.base_keys(nets)
    groups = {}
    for net in nets:
        if net.key not in bases:  # base nets train alone (nets.packs)
            groups.setdefault(net.pack_key, []).append(net)
    if pack == 0:
        packed = models.get(preset.model).packed
        sizes = {key: -(-len(group) // processes) if packed else 1 for key, group in groups.items()}
    else:
        sizes = dict.fromkeys(groups, pack)
    return Plan(nets=nets, workdir=workdir or preset.workdir, dataset=preset.dataset,
                data_dir=preset.data_dir, flagfile=flagfile, extra_flags=list(extra_flags),
                threads=threads, pack_sizes=sizes)
