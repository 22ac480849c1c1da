"""The grid lists the paper's nets with their base-net dependencies, prints them on --dry_run,
refuses contradictory input, and submits two dependent SLURM arrays (checked with a fake sbatch)."""
import collections
import dataclasses
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keras_transfer import config, exit_status, grid, naming
from keras_transfer.grid import nets as nets_lib

REPO = Path(__file__).resolve().parents[1]


def nets_of(**kw):
    kw.setdefault("dataset", "fashion_mnist")
    kw.setdefault("splits", ["random:0"])
    kw.setdefault("seeds", [0])
    return grid.enumerate_nets(**kw)


def test_counts_per_split_and_seed():
    nets = nets_of()
    by_condition = collections.Counter(net.condition for net in nets)
    # Per split and seed 2 bases + 28 (target B) + 28 (reverse, target A); per seed the paper's
    # random-features control on the whole dataset: its baseA and R1A..R7A.
    assert len(nets) == 58 + 8
    assert by_condition == {"base": 3, "selffer": 14, "selffer+": 14, "transfer": 14,
                            "transfer+": 14, "random": 7}
    assert {(net.split_dir, net.target) for net in nets if net.condition == "random"} == {
        ("whole", "A")}
    assert len({net.key for net in nets}) == len(nets)
    two = nets_of(splits=["random:0", "random:1"], seeds=[0, 1])
    assert len(two) == 4 * 58 + 2 * 8  # the whole-dataset nets are per seed, not per split


def test_the_papers_protocol_selffer_on_b_random_on_one_split():
    nets = nets_of(splits=["random:0", "random:1"], selffer_targets=["B"],
                   random_control="half", random_splits=["random:0"])
    by_condition = collections.Counter(net.condition for net in nets)
    # Per split: 2 bases, BnB and BnB+ on B only, AnB, AnB+, BnA, BnA+; RnB on split 0 only.
    assert by_condition == {"base": 4, "selffer": 14, "selffer+": 14, "transfer": 28,
                            "transfer+": 28, "random": 7}
    assert {net.target for net in nets if net.condition.startswith("selffer")} == {"B"}
    assert {net.split for net in nets if net.condition == "random"} == {"random:0"}


@pytest.mark.parametrize("option,message", [
    ("--selffer_targets=A", "--selffer_targets must be among --targets"),
    ("--random_splits=3", "--random_splits must be among --splits"),
])
def test_protocol_options_outside_the_grid_are_refused(tmp_path, option, message):
    result = subprocess.run([sys.executable, "-m", "keras_transfer.grid", "--targets=B",
                             "--splits=0,1", option, "--dry_run",
                             f"--workdir={tmp_path}", "--flagfile=flags/smoke.flags"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and message in result.stderr


def test_names_of_the_target_b_family():
    names = {net.name for net in nets_of(targets=["B"], experiments=["transfer"])}
    expected = {"baseA", "baseB"} | {f"{s}{n}B{f}" for s in "AB" for n in range(1, 8) for f in ("", "+")}
    assert names == expected


def test_dependencies_point_at_the_base_of_the_same_split_and_seed():
    nets = nets_of(splits=["random:0", "random:1"], seeds=[0, 3])
    keys = {net.key for net in nets}
    first_dependant = min(i for i, net in enumerate(nets) if net.needs)
    assert all(net.n == 0 for net in nets[:4]) and all(not n.needs for n in nets[:first_dependant])
    for net in nets:
        if net.source in ("A", "B"):
            assert net.needs == ((net.split_dir, net.seed, f"base{net.source}"),)
            assert net.needs[0] in keys
        else:
            assert net.needs == ()


def test_dissimilar_and_reduced_experiments():
    nets = nets_of(experiments=["dissimilar", "reduced"], reduced_examples=[10, 100], seeds=[0, 1],
                   reduced_data="half")
    dissimilar = [net for net in nets if net.experiment == "dissimilar"]
    reduced = [net for net in nets if net.experiment == "reduced"]
    assert len(dissimilar) == 2 * 58 and {net.split for net in dissimilar} == {"dissimilar"}
    assert {(net.split_dir, net.name) for net in reduced} == {
        (f"random_0_epc{e}", f"base{h}") for e in (10, 100) for h in "AB"}
    assert all("--examples_per_class=10" in net.main_flags() for net in reduced
               if net.examples_per_class == 10)
    imagenet = grid.enumerate_nets(dataset="imagenet2012", splits=["random:0"], seeds=[0],
                                   experiments=["dissimilar"])
    assert {net.split_dir for net in imagenet} == {"natman"}


def test_convergence_control_trains_each_base_again_on_a_longer_schedule():
    nets = nets_of(splits=["random:0", "random:1"], experiments=["transfer", "convergence"],
                   n_values=[1])
    control = [net for net in nets if net.experiment == "convergence"]
    assert sorted((net.split_dir, net.name) for net in control) == [
        (f"random_{s}", f"base{h}-x2") for s in (0, 1) for h in "AB"]
    assert all(net.needs == () and "--stretch=2" in net.main_flags() for net in control)
    # They train alone (another solver), and nothing copies from them.
    plan_packs = nets_lib.packs([n for n in nets if n.needs or n.stretch > 1], lambda _: 18,
                                nets_lib.base_keys(nets))
    assert all(len(pack) == 1 for pack in plan_packs if pack[0].stretch > 1)
    assert not {net.key for net in control} & nets_lib.base_keys(nets)


def test_random_control_whole_is_ra_on_the_whole_dataset_and_half_is_rnb_on_splits():
    nets = nets_of(splits=["random:0", "random:1"], seeds=[0, 1], experiments=["random"])
    names = ["baseA"] + [f"R{n}A" for n in range(1, 8)]
    # The paper's control: per seed (not per split) a whole-dataset baseA and R1A..R7A.
    assert sorted((net.split, net.split_dir, net.seed, net.name) for net in nets) == sorted(
        ("whole", "whole", seed, name) for seed in (0, 1) for name in names)
    assert all(net.experiment == "random" and net.needs == () for net in nets)
    by_name = {(net.seed, net.name): net for net in nets}
    assert by_name[1, "R2A"].main_flags() == ["--split=whole", "--seed=1", "--source=random",
                                              "--target=A", "--n=2"]
    assert by_name[0, "baseA"].main_flags() == ["--split=whole", "--seed=0", "--source=none",
                                                "--target=A", "--n=0"]
    half = nets_of(splits=["random:0", "random:1"], experiments=["random"],
                   random_control="half", random_splits=["random:1"])
    assert {(net.split_dir, net.name) for net in half} == {("random_1", f"R{n}B")
                                                           for n in range(1, 8)}
    assert half[0].main_flags() == ["--split=random:1", "--seed=0", "--source=random",
                                    "--target=B", "--n=1"]


def test_reduced_data_whole_and_half_with_a_solver_of_their_own():
    nets = nets_of(splits=["random:0", "random:1"], experiments=["reduced"],
                   reduced_examples=[10, 100], reduced_steps=200, reduced_lr_step=50)
    assert sorted((net.split_dir, net.name) for net in nets) == [("whole_epc10", "baseA"),
                                                                 ("whole_epc100", "baseA")]
    assert nets[0].main_flags() == ["--split=whole", "--seed=0", "--source=none", "--target=A",
                                    "--n=0", "--examples_per_class=10", "--steps=200",
                                    "--lr_step=50"]
    half = nets_of(splits=["random:0", "random:1"], experiments=["reduced"], reduced_data="half",
                   reduced_examples=[10], reduced_steps=200)
    assert {(net.split_dir, net.name) for net in half} == {
        (f"random_{s}_epc10", f"base{h}") for s in (0, 1) for h in "AB"}
    assert all(net.main_flags()[-2:] == ["--examples_per_class=10", "--steps=200"] for net in half)
    # 0, the default: main's own solver, as for every other net.
    plain = nets_of(experiments=["reduced"], reduced_examples=[10])
    assert plain[0].main_flags()[-1] == "--examples_per_class=10"
    # Frozen and hashable; another solver is another pack (one compiled step per pack).
    assert len({*nets, *half, *plain}) == len(nets) + len(half) + len(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        nets[0].steps = 1
    assert nets[0].pack_key != plain[0].pack_key
    pack = [half[0], dataclasses.replace(half[0], source="random", n=1)]
    plan = grid.Plan(nets=pack, workdir="runs", dataset="fashion_mnist", data_dir="data",
                     flagfile=None, extra_flags=[])
    assert plan.command(pack)[-4:] == ["--seed=0", "--nets=baseA,R1A", "--examples_per_class=10",
                                       "--steps=200"]


def test_dry_run_counts_the_whole_dataset_nets_with_their_own_solver(tmp_path):
    text = dry_run(tmp_path, "--experiments=random,reduced", "--reduced_examples=10",
                   "--reduced_steps=30", "--reduced_lr_step=15", "--pack=1", "--",
                   "--steps=10", "--batch_size=4")
    commands = commands_in(text)
    (reduced,) = [cmd for cmd in commands if "--examples_per_class=10" in cmd]
    assert sorted(nets_in(cmd)[0] for cmd in commands if cmd != reduced) == sorted(
        ["baseA"] + [f"R{n}A" for n in range(1, 8)])
    # main takes the last of a repeated flag: the reduced net's own steps come after the preset's.
    assert reduced.index("--steps=30") > reduced.index("--steps=10") and "--lr_step=15" in reduced
    assert config.resolve(None, ["--steps=10", "--steps=30"]).steps == 30
    # baseA and R1A..R7A at 10 steps of 4 images, the reduced baseA at 30.
    assert "440 images trained (9 nets)" in text
    assert "#   python -m data_prep --source=fashion_mnist --split=whole --out=data\n" in text
    assert ("#   python -m data_prep --source=fashion_mnist --split=whole --out=data "
            "--examples_per_class=10\n") in text


def test_a_finished_reduced_net_answers_for_its_own_solver(tmp_path):
    run = naming.run_dir(tmp_path / "runs", "fashion_mnist", "whole_epc10", 0, "baseA")
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"steps": 30, "lr_step": 15, "batch_size": 4,
                                                 "model": "small"}))
    (run / "result.json").write_text("{}")
    (run / "model.weights.h5").write_bytes(b"")  # a finished run has both
    grid_args = ["--experiments=reduced", "--reduced_examples=10"]
    text = dry_run(tmp_path, *grid_args, "--reduced_steps=30", "--reduced_lr_step=15", "--",
                   "--steps=10", "--batch_size=4")
    assert "1 nets in" in text and "1 done, 0 to run" in text
    with pytest.raises(grid.GridError, match=r"whole_epc10/seed0/baseA: it was trained with "
                                             r"--steps=30 \(now 10\)"):
        dry_run(tmp_path, *grid_args, "--", "--steps=10", "--batch_size=4")


def test_reduced_without_sizes_and_unknown_experiment_are_refused():
    with pytest.raises(grid.GridError, match="--reduced_examples"):
        nets_of(experiments=["reduced"])
    with pytest.raises(grid.GridError, match="unknown experiment"):
        nets_of(experiments=["transfr"])


def dry_run(tmp_path, *args):
    out = io.StringIO()
    code = grid.main(["--dry_run", f"--workdir={tmp_path / 'runs'}", *args], out=out)
    assert code == 0
    return out.getvalue()


def commands_in(text):
    return [shlex.split(line) for line in text.splitlines() if not line.startswith("#")]


def nets_in(cmd):
    """The run names a command trains: its --nets list, or the one net its flags describe."""
    flags = dict(arg[2:].split("=", 1) for arg in cmd if arg.startswith("--") and "=" in arg)
    if "nets" in flags:
        return flags["nets"].split(",")
    return [naming.run_name(flags["source"], flags["target"], int(flags["n"]),
                            "--finetune" in cmd)]


def split_of(cmd):
    return next(arg.split("=", 1)[1] for arg in cmd if arg.startswith("--split="))


def test_dry_run_prints_every_command_with_the_grid_flags(tmp_path):
    text = dry_run(tmp_path, "--jobs=2", "--pack=1", "--", "--steps=10", "--batch_size=4")
    commands = commands_in(text)
    assert len(commands) == 66
    for cmd in commands:
        assert cmd[1:3] == ["-m", "keras_transfer.main"]
        assert "--steps=10" in cmd and f"--workdir={tmp_path / 'runs'}" in cmd
        assert "--seed=0" in cmd
    # The random-features control and its base on the whole dataset, the rest on random:0.
    on_whole = [cmd for cmd in commands if "--split=whole" in cmd]
    assert sorted(nets_in(cmd)[0] for cmd in on_whole) == ["R1A", "R2A", "R3A", "R4A", "R5A",
                                                           "R6A", "R7A", "baseA"]
    assert all("--split=random:0" in cmd for cmd in commands if cmd not in on_whole)
    assert sum(cmd[-5:] == ["--source=A", "--target=B", "--n=3", "--finetune", "--threads=1"]
               for cmd in commands) == 1
    # Compute: 66 nets x 10 steps x 4 images.
    assert "2,640 images trained (66 nets)" in text
    assert "hours at 1000 images/s" in text


def test_small_nets_are_packed_by_target_half_and_bases_train_alone(tmp_path):
    text = dry_run(tmp_path, "--jobs=2", "--", "--steps=10")
    commands = commands_in(text)
    packs = [nets_in(cmd) for cmd in commands]
    nets = [(split_of(cmd), name) for cmd in commands for name in nets_in(cmd)]
    assert len(set(nets)) == len(nets) == 66  # every net exactly once
    assert ["baseA"] in packs and ["baseB"] in packs
    for pack in packs:
        assert len({name[-1] if not name.endswith("+") else name[-2] for name in pack}) == 1
    # Per pack key, the nets that copy or are random shared over the 2 processes: 28 of target
    # B and 28 of target A on random:0; on the whole dataset its baseA, which no net copies
    # from, and R1A..R7A (8 nets, one input stream).
    assert sorted(len(p) for p in packs if len(p) > 1) == [4, 4, 14, 14, 14, 14]
    assert "10 nets in 4 processes" in text and "56 nets in 4 processes" in text
    one_job = dry_run(tmp_path, "--jobs=1", "--targets=B", "--experiments=transfer",
                      "--layers=1", "--", "--steps=10")
    assert "# stage 2, after their base nets: 4 nets in 1 process\n" in one_job, one_job
    with_pack_3 = [nets_in(cmd) for cmd in commands_in(dry_run(tmp_path, "--pack=3"))]
    assert max(len(p) for p in with_pack_3) == 3 and len(sum(with_pack_3, [])) == 66
    # CaffeNet nets keep a device busy alone: no packing unless asked.
    flagfile = tmp_path / "paper.flags"
    flagfile.write_text("--model=caffenet\n--dataset=imagenet2012\n")
    assert all(len(nets_in(cmd)) == 1 for cmd in commands_in(
        dry_run(tmp_path, f"--flagfile={flagfile}", "--jobs=2")))


def test_dry_run_leaves_out_finished_nets_and_writes_nothing(tmp_path):
    base = naming.run_dir(tmp_path / "runs", "fashion_mnist", "random_0", 0, "baseB")
    base.mkdir(parents=True)
    (base / "result.json").write_text("{}")
    (base / "model.weights.h5").write_bytes(b"")  # a finished run has both
    text = dry_run(tmp_path, "--targets=B", "--experiments=transfer", "--pack=1")
    commands = commands_in(text)
    assert len(commands) == 29
    assert not any("--source=none" in c and "--target=B" in c for c in commands)
    assert "30 nets" in text and "1 done, 29 to run" in text
    assert sorted(p.name for p in (tmp_path / "runs").rglob("*") if p.is_file()) == ["model.weights.h5", "result.json"]


def test_a_folder_of_small_images_is_priced_and_cropped_at_its_own_size(tmp_path):
    """A folder of 20x24 PNGs is prepared at 24x24 (not stretched to 256), so the dry run prices
    the small network at its default crop of 24 - 2 = 22 pixels, the crop main trains on."""
    from data_prep.prepare import prepare
    from data_prep_helpers import make_image_folder
    from keras_transfer import models, resolve

    root = make_image_folder(tmp_path / "pets", per_class=4, size=(20, 24))
    halves = prepare(f"folder:{root}", "random:0", tmp_path / "data", progress=False)
    text = dry_run(tmp_path, "--targets=B", "--experiments=transfer", "--",
                   f"--data_dir={tmp_path / 'data'}", "--dataset=pets", "--steps=10")
    macs = models.multiply_adds(models.build("small", 2, (22, 22, 3)))
    assert f"3 x 2 x {macs / 1e9:.4g} G forward multiply-adds, small at 22x22x3)" in text
    manifest = json.loads((halves["B"] / "manifest.json").read_text())
    net = config.Config(data_dir=str(tmp_path / "data"), dataset="pets", model="small")
    resolve.check_images(net, manifest)
    assert resolve.input_shape_of(net, manifest) == (22, 22, 3)


def test_caffenet_compute_uses_the_papers_multiply_adds(tmp_path):
    flagfile = tmp_path / "paper.flags"
    flagfile.write_text(f"--model=caffenet\n--batch_size=256\n--steps=450000\n"
                        f"--dataset=imagenet2012\n--data_dir={tmp_path / 'data'}\n")
    text = dry_run(tmp_path, f"--flagfile={flagfile}", "--targets=B", "--experiments=transfer",
                   "--images_per_sec=2000")
    assert "--flagfile=" + str(flagfile) in commands_in(text)[0]
    images = 30 * 450000 * 256
    assert f"{images:,} images trained" in text
    # 3 x 2 x forward multiply-adds; the model count (from models.py) is close to the paper's 0.724 G.
    gflop = float(text.split(" GFLOP per trained image")[0].rsplit("x ", 1)[1])
    assert 4.0 < gflop < 4.7
    hours = float(text.split(" GPU-hours at 2000")[0].rsplit("= ", 1)[1])
    assert hours == pytest.approx(images / 2000 / 3600, rel=1e-3)


@pytest.mark.parametrize("args,message", [
    (["--", "--seed=3"], "--seed is set by the grid"),
    (["--", "--nofinetune"], "--finetune is set by the grid"),
    (["--", "--stepz=3"], "Unknown command line flag 'stepz'"),
    (["--", "stray"], "only flags of keras_transfer.main"),
    (["--steps=20"], "--steps=20 is a flag of keras_transfer.main: give main's flags after `--`, "
                     "e.g. ./launch.sh "),
    (["--noxla"], "--noxla is a flag of keras_transfer.main: give main's flags after `--`"),
    (["--", "--layers=7"], "--layers=7 is an option of the grid, not a flag of "
                           "keras_transfer.main: give it before `--`, e.g. ./launch.sh --layers=7"),
    (["--flagfile=/nonexistent.flags"], "flagfile /nonexistent.flags does not exist"),
    (["--targets=C"], "--targets must be"),
    (["--layers=0,8"], "--layers must be"),
    (["--jobs=0"], "--jobs must be at least 1"),
    (["--random_control=both"], "--random_control=both is invalid: use whole"),
    (["--reduced_data=all"], "--reduced_data=all is invalid: use whole"),
    (["--reduced_steps=-1"], "--reduced_steps=-1 is invalid"),
    (["--reduced_lr_step=-5"], "--reduced_lr_step=-5 is invalid"),
    (["--splits=whole"], "--splits=whole: that split has no half B"),
    (["--random_splits=0"], "--random_splits chooses the splits of --random_control=half"),
])
def test_bad_input_is_named(tmp_path, args, message):
    with pytest.raises(grid.GridError, match=message.replace("(", r"\(").replace("+", r"\+")):
        grid.main(["--dry_run", f"--workdir={tmp_path}", *args], out=io.StringIO())
    assert not any(tmp_path.iterdir())



@pytest.mark.parametrize("args,message", [
    (["--splits=abc"], "argument --splits: unknown --split=abc"),
    (["--splits=random:-1"], "argument --splits: bad --split=random:-1"),
    (["--seeds=-1"], "argument --seeds: a seed is an integer from 0 to 2**31 - 1, not -1"),
    (["--seeds=x"], "argument --seeds: expected comma-separated integers"),
    (["--random_control=all"], "--random_control=all is invalid"),
    (["demo", "--splits=abc"], "--splits=abc: the demo trains on random splits"),
    (["demo", "--splits=0,natman"], "--splits=0,natman: the demo trains on random splits"),
])
def test_bad_launch_options_are_named_before_anything_starts(tmp_path, args, message):
    result = subprocess.run([str(REPO / "launch.sh"), *args, "--dry_run", f"--workdir={tmp_path}/runs"],
                            env=dict(os.environ, PYTHON=sys.executable), capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())

def test_local_backend_refuses_missing_data_before_running_anything(tmp_path):
    with pytest.raises(grid.GridError, match="python -m data_prep --source=fashion_mnist "
                                             "--split=random:0 --out=nodata"):
        grid.main([f"--workdir={tmp_path}/runs", "--", "--data_dir=nodata"], out=io.StringIO())
    assert not (tmp_path / "runs").exists()
    with pytest.raises(grid.GridError) as refused:  # a path with a space, quoted for the shell
        grid.main([f"--workdir={tmp_path}/runs", "--", "--data_dir=no data"], out=io.StringIO())
    hint = next(line for line in str(refused.value).splitlines() if "data_prep" in line)
    assert "--out=no data" in shlex.split(hint)



def test_a_missing_split_is_prepared_from_the_source_of_another(tmp_path):
    """Split random:0 of a folder dataset is prepared, its whole-dataset split is not: the grid,
    and main's own hint, name the folder the prepared split came from, and the command works."""
    from data_prep import manifest
    from data_prep.errors import DataPrepError
    from data_prep.prepare import prepare
    from data_prep_helpers import make_image_folder

    root = make_image_folder(tmp_path / "pics", per_class=4)
    prepare(f"folder:{root}", "random:0", tmp_path / "data", progress=False)
    with pytest.raises(grid.GridError) as refused:
        grid.main([f"--workdir={tmp_path}/runs", "--targets=B", "--layers=1", "--",
                   f"--data_dir={tmp_path / 'data'}", "--dataset=pics", "--batch_size=4"],
                  out=io.StringIO())
    hint = next(line for line in str(refused.value).splitlines() if "data_prep" in line)
    assert shlex.split(hint) == ["python", "-m", "data_prep", f"--source=folder:{root}",
                                 "--split=whole", f"--out={tmp_path / 'data'}"]
    with pytest.raises(DataPrepError) as missing:
        manifest.load_manifest(tmp_path / "data" / "pics" / "whole" / "A")
    assert shlex.split(str(missing.value).split("`")[1]) == shlex.split(hint)
    prepare(f"folder:{root}", "whole", tmp_path / "data", progress=False)  # what it says works


@pytest.mark.parametrize("dataset, expected", [
    ("fashion_mnist", "--source=fashion_mnist --split=random:0 --out=DATA"),
    ("imagenet2012", "--source=tfds:imagenet2012 --tfds_data_dir=TFDS_DIR --split=random:0 "
                     "--out=DATA (TFDS_DIR: the TFDS data_dir"),
    ("pics", "--source=SOURCE --split=random:0 --out=DATA (SOURCE: fashion_mnist, tfds:NAME or "
             "folder:ROOT)"),
])
def test_a_dataset_never_prepared_gets_the_source_its_name_implies(tmp_path, dataset, expected):
    out = io.StringIO()
    grid.main(["--dry_run", f"--workdir={tmp_path}", "--targets=B", "--layers=1",
               "--experiments=transfer", "--", f"--dataset={dataset}", "--data_dir=DATA"], out=out)
    assert f"#   python -m data_prep {expected}" in out.getvalue()


class _SignalledWhileStarting(grid.Plan):
    """A plan whose runs sleep, and whose launcher gets a real SIGTERM while it starts each run."""

    def command(self, pack):
        os.kill(os.getpid(), signal.SIGTERM)
        return [sys.executable, "-c", "import time; time.sleep(120)"]


def test_sigterm_while_a_run_starts_stops_that_run_too(tmp_path):
    # Raised mid-start, the stop would forget the run being started and leave it training alone.
    nets = [net for net in nets_of() if net.name == "baseA"]
    plan = _SignalledWhileStarting(nets=nets, workdir=str(tmp_path), dataset="fashion_mnist",
                                   data_dir="data", flagfile=None, extra_flags=[])
    out = io.StringIO()
    started = time.monotonic()
    assert grid.run_local(plan, jobs=1, out=out) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 60  # the sleeping run was stopped, not waited for
    log = out.getvalue()
    assert "started random_0/seed0/baseA" in log, log
    assert "SIGTERM: stopping 1 running nets" in log, log


@pytest.mark.parametrize("code,preempted", [
    (143, True), (130, True), (-signal.SIGTERM, True), (-signal.SIGINT, True),
    (0, False), (1, False), (2, False), (3, False), (4, False), (-signal.SIGKILL, False),
])
def test_a_run_ended_by_a_stop_signal_is_preempted_whether_or_not_main_caught_it(code, preempted):
    assert bool(exit_status.stopped(code)) is preempted


FAKE_SBATCH = """#!/usr/bin/env bash
# Records its arguments (one JSON list per call) and prints a job id like `sbatch --parsable`.
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$FAKE_SBATCH_LOG"
n=$(wc -l < "$FAKE_SBATCH_LOG")
echo "$((1000 + n))"
"""


def _fake_sbatch_env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    log = tmp_path / "sbatch.log"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_SBATCH_LOG=str(log),
               PYTHON=sys.executable, KT_SLURM_PARTITION="gpu")
    return env, log


def _finish(workdir, split_dir, name):
    done = naming.run_dir(workdir, "fashion_mnist", split_dir, 0, name)
    done.mkdir(parents=True)
    (done / "result.json").write_text("{}")
    (done / "model.weights.h5").write_bytes(b"")  # a finished run has both


@pytest.mark.slow
def test_slurm_dependants_wait_for_their_own_base_task(tmp_path):
    env, log = _fake_sbatch_env(tmp_path)
    workdir = tmp_path / "runs"
    _finish(workdir, "random_1", "A2B")  # finished: not submitted
    result = subprocess.run(
        [str(REPO / "launch.sh"), "--backend=slurm", "--splits=0,1", f"--workdir={workdir}",
         "--gpus=1", "--time=2-00:00:00", "--", "--steps=7"],
        env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    # One array of nets without dependencies, then one per base net (2 splits x 2 halves).
    assert len(calls) == 5
    bases, dependants = calls[0], calls[1:]
    assert all(f"array job {1001 + i}" in result.stdout for i in range(5))
    # 2 splits x 2 bases and the whole dataset's baseA and R1A..R7A; 2 x 56 - 1 finished
    # transfer nets.
    assert "--array=0-11" in bases
    assert not any(a.startswith("--dependency") for a in bases)
    base_tasks = Path(bases[-1]).read_text().splitlines()
    assert len(base_tasks) == 12
    assert all("--source=none" in t or "--source=random" in t for t in base_tasks)
    waited = set()
    for call in dependants:
        assert "--kill-on-invalid-dep=yes" in call
        (dependency,) = [a for a in call if a.startswith("--dependency=")]
        match = re.fullmatch(r"--dependency=afterok:1001_(\d+)", dependency)
        assert match, dependency
        base = shlex.split(base_tasks[int(match.group(1))])
        waited.add(int(match.group(1)))
        assert "--source=none" in base
        split = next(a for a in base if a.startswith("--split="))
        source = next(a for a in base if a.startswith("--target=")).replace("target", "source")
        # Every net of this array copies from exactly that base.
        for task in Path(call[-1]).read_text().splitlines():
            flags = set(shlex.split(task))
            assert split in flags and source in flags and "--steps=7" in flags
    assert len(waited) == 4
    tasks = [Path(call[-1]).read_text().splitlines() for call in dependants]
    assert sorted(len(t) for t in tasks) == [27, 28, 28, 28]
    for call in calls:
        assert "--requeue" in call and "--partition=gpu" in call and "--gres=gpu:1" in call
        assert "--time=2-00:00:00" in call
    all_dependants = [t for group in tasks for t in group]
    finished = {"--split=random:1", "--source=A", "--target=B", "--n=2"}
    assert not any(finished <= set(shlex.split(t)) and "--finetune" not in t
                   for t in all_dependants)
    assert sum(finished <= set(shlex.split(t)) for t in all_dependants) == 1  # only A2B+ is left
    # The task script runs line SLURM_ARRAY_TASK_ID of the tasks file.
    script = Path(bases[-2])
    probe = tmp_path / "probe.tasks"
    probe.write_text("echo first\necho second 'two words'\n")
    run = subprocess.run([str(script), str(probe)], env=dict(env, SLURM_ARRAY_TASK_ID="1"),
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.splitlines()[-1] == "second two words"


def test_slurm_dependants_of_finished_bases_start_at_once(tmp_path):
    env, log = _fake_sbatch_env(tmp_path)
    workdir = tmp_path / "runs"
    _finish(workdir, "random_0", "baseA")
    result = subprocess.run(
        [str(REPO / "launch.sh"), "--backend=slurm", "--splits=0", f"--workdir={workdir}"],
        env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    # bases (baseB; baseA and 7 random on the whole dataset), baseA's dependants, baseB's
    assert len(calls) == 3
    without = [c for c in calls[1:] if not any(a.startswith("--dependency") for a in c)]
    assert len(without) == 1
    assert all("--source=A" in t for t in Path(without[0][-1]).read_text().splitlines())


def test_slurm_without_sbatch_says_so(tmp_path):
    # A PATH with every system command but sbatch (which may be installed here).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in ("/usr/bin", "/bin"):
        for command in Path(folder).iterdir():
            if command.name != "sbatch" and not (bin_dir / command.name).exists():
                (bin_dir / command.name).symlink_to(command)
    env = dict(os.environ, PATH=str(bin_dir), PYTHON=sys.executable)
    result = subprocess.run([str(REPO / "launch.sh"), "--backend=slurm", f"--workdir={tmp_path}"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "sbatch not found" in result.stderr


def test_finished_net_trained_with_other_settings_is_refused_until_overwrite(tmp_path):
    base = naming.run_dir(tmp_path / "runs", "fashion_mnist", "random_0", 0, "baseA")
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"steps": 20, "batch_size": 4, "model": "small"}))
    (base / "result.json").write_text("{}")
    (base / "model.weights.h5").write_bytes(b"")  # a finished run has both
    args = ["--dry_run", f"--workdir={tmp_path / 'runs'}", "--experiments=transfer", "--",
            "--steps=10", "--batch_size=4"]
    with pytest.raises(grid.GridError, match=r"(?s)random_0/seed0/baseA: it was trained with "
                                             r"--steps=20 \(now 10\).*--overwrite"):
        grid.main(args, out=io.StringIO())
    text = dry_run(tmp_path, "--overwrite", *args[2:])
    assert "training 1 nets again" in text
    retrained = [c for c in commands_in(text) if "--source=none" in c and "--target=A" in c]
    assert len(retrained) == 1 and "--overwrite" in retrained[0]
    assert not any("--overwrite" in c for c in commands_in(text) if c not in retrained)


def test_a_finished_convergence_twin_is_judged_by_its_own_settings(tmp_path):
    """baseA-x2 was trained with --stretch=2: that is the twin's own setting, not a change; a
    twin trained with another --lr is stale like any finished net."""
    twin = naming.run_dir(tmp_path / "runs", "fashion_mnist", "random_0", 0, "baseA-x2")
    twin.mkdir(parents=True)
    trained = {"run": "baseA-x2", "stretch": 2, "lr": 0.05, "target": "A", "mean_half": "A"}
    (twin / "config.json").write_text(json.dumps(trained))
    (twin / "result.json").write_text(json.dumps({"run": "baseA-x2", "layers": []}))
    (twin / "model.weights.h5").write_bytes(b"")  # a finished run has both
    args = ["--dry_run", f"--workdir={tmp_path / 'runs'}", "--experiments=transfer,convergence",
            "--", "--steps=10", "--batch_size=4"]
    planned = commands_in(dry_run(tmp_path, *args[1:]))
    assert not any("--stretch=2" in c and "--target=A" in c for c in planned)
    (twin / "config.json").write_text(json.dumps({**trained, "lr": 0.5}))
    with pytest.raises(grid.GridError, match=r"random_0/seed0/baseA-x2: it was trained with "
                                             r"--lr=0.5 \(now 0.05\)"):
        grid.main(args, out=io.StringIO())


def test_a_started_net_with_other_settings_is_refused_until_overwrite(tmp_path):
    """A net killed with a backup resumes only with the settings it started with (main refuses
    other ones): the grid lists it before it starts anything, as it lists a stale finished net."""
    base = naming.run_dir(tmp_path / "runs", "fashion_mnist", "random_0", 0, "baseA")
    (base / "backup").mkdir(parents=True)
    (base / "backup" / "ckpt-5.index").write_bytes(b"")
    args = ["--dry_run", f"--workdir={tmp_path / 'runs'}", "--experiments=transfer", "--",
            "--steps=10", "--batch_size=4"]
    started = {"run": "baseA", "lr": 0.5, "target": "A", "mean_half": "A"}
    (base / "config.json").write_text(json.dumps(started))
    with pytest.raises(grid.GridError, match=r"(?s)random_0/seed0/baseA: it was started with "
                                             r"--lr=0.5 \(now 0.05\) and has a backup.*--overwrite"):
        grid.main(args, out=io.StringIO())
    (base / "config.json").write_text("{cut short")
    with pytest.raises(grid.GridError, match="baseA: it has a backup but its config.json is missing or "
                                             "unreadable"):
        grid.main(args, out=io.StringIO())
    retrained = [c for c in commands_in(dry_run(tmp_path, "--overwrite", *args[2:]))
                 if "--source=none" in c and "--target=A" in c]
    assert len(retrained) == 1 and "--overwrite" in retrained[0]
    # With the settings it started with, it is resumed, not refused.
    (base / "config.json").write_text(json.dumps({**started, "lr": 0.05}))
    grid.main(args, out=io.StringIO())


def test_a_diverged_net_is_refused_until_overwrite_even_if_its_record_is_unreadable(tmp_path):
    """The grid counts a net as diverged by the same rule as main (RunDir.is_diverged): a
    diverged.json, readable or not, and no result.json."""
    base = naming.run_dir(tmp_path / "runs", "fashion_mnist", "random_0", 0, "baseA")
    base.mkdir(parents=True)
    (base / "diverged.json").write_text("{cut short")
    args = ["--dry_run", f"--workdir={tmp_path / 'runs'}", "--experiments=transfer", "--",
            "--steps=10", "--batch_size=4"]
    with pytest.raises(grid.GridError, match=r"(?s)random_0/seed0/baseA: it diverged by step \? "
                                             r"\(its loss was not finite; see \S*diverged.json\)"
                                             r".*--overwrite"):
        grid.main(args, out=io.StringIO())
    retrained = [c for c in commands_in(dry_run(tmp_path, "--overwrite", *args[2:]))
                 if "--source=none" in c and "--target=A" in c]
    assert len(retrained) == 1 and "--overwrite" in retrained[0]


def test_layers_default_to_the_cut_points_of_mains_model(tmp_path):
    """n runs over 1..k of the network main trains: 7 layers for small, 5 cut points for
    resnet_small (on one split 2 bases, and per n 8 nets: selffer and transfer, frozen and
    fine-tuned, on both halves)."""
    for model, k in (("small", 7), ("resnet_small", 5)):
        text = dry_run(tmp_path, "--experiments=transfer", "--", f"--model={model}")
        assert f"# {2 + 8 * k} nets in " in text, model
        assert f"A{k}B+" in text and f"A{k + 1}B" not in text
    with pytest.raises(grid.GridError, match=r"--layers must be values of n in 1\.\.5 \(the cut "
                                             r"points of --model=resnet_small\), not \[6\]"):
        dry_run(tmp_path, "--layers=5,6", "--", "--model=resnet_small")


def test_frozen_nets_of_one_base_share_a_pack_and_the_work_is_shared_out():
    """AnB for every n in one pack (their copied layers are computed once there), BnB in
    another; the fine-tuned nets split between the two, and so do the random-features controls
    that train the most layers (R1B, R2B); the first pack is full, as the launcher starts it
    alone when only some bases are done."""
    def net(source, n, finetune):
        return nets_lib.PlannedNet(experiment="transfer", split="random:0", split_dir="random_0",
                                   seed=0, source=source, target="B", n=n, finetune=finetune)
    random = [net("random", n, False) for n in range(1, 8)]
    from_b = [net("B", n, tune) for n in range(1, 8) for tune in (False, True)]
    from_a = [net("A", n, tune) for n in range(1, 8) for tune in (False, True)]
    for ready in (random + from_b, random + from_b + from_a):
        packs = nets_lib.packs(ready, lambda _: 18, set())
        assert sorted(n.name for p in packs for n in p) == sorted(n.name for n in ready)
        assert len(packs[0]) == 18 and all(len(p) <= 18 for p in packs)
        for source in "AB":
            frozen = [n.name for n in ready if n.source == source and not n.finetune]
            assert sum(bool(set(frozen) & {n.name for n in p}) for p in packs) == min(1, len(frozen))
    tuned = [sum(n.finetune for n in p) for p in packs]
    assert len(packs) == 2 and abs(tuned[0] - tuned[1]) <= 1
    pack_of = {n.name: i for i, p in enumerate(packs) for n in p}
    assert pack_of["R1B"] != pack_of["R2B"]
    work = [sum(nets_lib.trained_blocks(n, 7) for n in p) for p in packs]
    assert abs(work[0] - work[1]) <= 8  # at most one fine-tuned net's share apart


def test_a_net_that_outlives_the_launchers_stop_by_the_grace_period_is_killed(tmp_path):
    """The launcher's stop (grid.local._stop_all): SIGTERM to every run, then SIGKILL to a run
    still alive when the grace period ends; each run's lock is let go and its log closed."""
    from data_prep.locking import FileLock
    from keras_transfer.grid import local

    children = {  # a run that stops on SIGTERM, and one that ignores it (stuck in native code)
        "stops": "import time\nwhile True: time.sleep(0.1)",
        "stuck": "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                 "print('ready', flush=True)\nwhile True: time.sleep(0.1)",
    }
    runs = []
    for name, code in children.items():
        lock = FileLock(tmp_path / f"{name}.lock")
        assert lock.acquire()
        log = open(tmp_path / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        runs.append(local._Running(nets=[name], proc=proc, locks=[lock], log=log,
                                   log_path=tmp_path / f"{name}.log", started=time.monotonic()))
    assert runs[1].proc.stdout.readline() == "ready\n"  # its SIGTERM handler is in place
    started = time.monotonic()
    local._stop_all(runs, grace_seconds=1.0)
    assert 1.0 <= time.monotonic() - started < 30
    assert [r.proc.returncode for r in runs] == [-signal.SIGTERM, -signal.SIGKILL]
    for r in runs:
        assert r.log.closed and all(lock.fd is None for lock in r.locks)
        assert FileLock(r.locks[0].path).acquire()  # another launcher may take the net now
