"""A bad run never passes for a good one: out-of-range flags are refused before anything is
written, a diverged net is recorded as diverged and never as done, a finished or half-trained
net is only reused or resumed with the settings and data it was trained with, --overwrite
retrains it, and every "retrain" hint is a command that retrains."""
import dataclasses
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep.prepare import prepare
from data_prep.sources import SyntheticSpec
from keras_transfer import config as config_lib
from keras_transfer import divergence, grid, report, run_records, train
from train_helpers import smoke_config as _config
from train_helpers import train_on_cpu as _train

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("flag", ["--lr=nan", "--lr=inf", "--lr=0", "--momentum=nan",
                                  "--momentum=1", "--dropout=1.5", "--dropout=-0.1",
                                  "--epochs=nan", "--epochs=-1", "--seed=-1", "--threads=-1",
                                  "--weight_decay=-1", "--weight_decay=inf", "--lr_step=-5",
                                  "--eval_steps=-1", "--batch_size=0", "--histogram_every=0",
                                  "--fc8_outputs=-2", "--crop=-1", "--examples_per_class=-1",
                                  "--steps=99999999999999999999", "--eval_steps=2147483648",
                                  "--batch_size=4294967296", "--stretch=2147483648"])
def test_out_of_range_flags_are_refused_by_main_and_the_grid(flag, tmp_path):
    name = flag[2:].split("=")[0]
    with pytest.raises(config_lib.ConfigError, match=f"--{name}=.* is out of range"):
        config_lib.resolve(None, [flag])
    if name not in grid.GRID_OWNED_FLAGS:  # the grid's own options check those
        with pytest.raises(grid.GridError, match=f"--{name}=.* is out of range"):
            grid.main(["--dry_run", f"--workdir={tmp_path}", "--", flag], out=io.StringIO())
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_diverged_net_is_recorded_as_diverged_never_as_done(synthetic_data, tmp_path):
    config = _config(synthetic_data, tmp_path, target="A", lr=1e30)
    with pytest.raises(divergence.Diverged,
                       match="baseA diverged by step 2: the training loss is nan"):
        _train(config)
    run_dir = config.run_dir
    assert not (run_dir / "result.json").exists() and not (run_dir / "model.weights.h5").exists()
    record = json.loads((run_dir / "diverged.json").read_text())
    assert record["run"] == "baseA" and record["step"] == 2
    # The same command again does not train it again, or pass it off as done.
    with pytest.raises(train.RunError, match="diverged by step 2.*--overwrite"):
        _train(config)
    # The report lists it apart and leaves it out of every mean.
    good = _train(_config(synthetic_data, tmp_path, target="B"))
    made = report.make_report(tmp_path)
    summary = made["files"]["summary.md"].read_text()
    assert made["runs"] == 1
    diverged_section = summary.split("## Diverged nets")[1]
    assert "synthetic/random_0/seed0/baseA: by step 2, the training loss was nan" in diverged_section
    assert "1 diverged nets are left out of every mean" in summary
    assert f"{good['top1_final']:.4f}" in summary.split("## Diverged nets")[0]
    # --overwrite with a sane learning rate trains it for real.
    result = _train(_config(synthetic_data, tmp_path, target="A", overwrite=True))
    assert result["steps"] == 4 and not (run_dir / "diverged.json").exists()
    assert not list(run_dir.glob(".replaced-*"))


@pytest.mark.slow
def test_a_diverged_net_in_the_main_process_exits_non_zero(synthetic_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "keras_transfer.main", f"--flagfile={REPO / 'flags/smoke.flags'}",
         f"--data_dir={synthetic_data}", "--dataset=synthetic", f"--workdir={tmp_path}",
         "--nets=baseA", "--lr=1e30"], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "baseA diverged by step" in proc.stderr and "Traceback" not in proc.stderr
    assert "done" not in proc.stdout


def test_a_legacy_result_with_a_nan_loss_is_not_averaged_in(tmp_path):
    from report_fixtures import write_run
    write_run(tmp_path, source="none", target="B", n=0, top1_final=0.8)
    bad = write_run(tmp_path, source="B", target="B", n=3, top1_final=0.2)
    result = json.loads((bad / "result.json").read_text())
    result["loss_final"] = float("nan")
    (bad / "result.json").write_text(json.dumps(result))
    made = report.make_report(tmp_path)
    assert made["runs"] == 1
    assert any("B3B/result.json: its final loss is nan: the net diverged" in n
               for n in made["notes"])


@pytest.mark.parametrize("change, message", [
    ({"n": "three"}, "n is 'three'"),
    ({"history": "none"}, "history is not a list"),
    ({"history": [{"step": 2, "top1": "high"}]}, "history is not a list"),
    ({"condition": 7}, "unknown condition"),
    ({"split": None}, "split is None, not text"),
])
def test_a_result_with_wrong_types_is_skipped_with_a_note(tmp_path, change, message):
    from report_fixtures import write_run
    write_run(tmp_path, source="none", target="B", n=0, top1_final=0.8)
    bad = write_run(tmp_path, source="B", target="B", n=3, top1_final=0.2)
    result = {**json.loads((bad / "result.json").read_text()), **change}
    (bad / "result.json").write_text(json.dumps(result))
    made = report.make_report(tmp_path)
    assert made["runs"] == 1
    assert any(f"skipped malformed {bad / 'result.json'}: " in n and message in n
               for n in made["notes"]), made["notes"]


@pytest.mark.slow
def test_a_finished_net_is_reused_only_with_its_settings_and_overwrite_retrains_it(
        synthetic_data, tmp_path, capsys):
    config = _config(synthetic_data, tmp_path, target="A")
    first = _train(config)
    result_path = config.run_dir / "result.json"
    before = result_path.stat().st_mtime_ns
    assert _train(config) == json.loads(json.dumps(first))
    assert "baseA is already done" in capsys.readouterr().out
    with pytest.raises(train.RunError, match=r"baseA is finished, but it was trained with "
                                             r"--lr=0.05 \(now 0.02\).*--overwrite"):
        _train(_config(synthetic_data, tmp_path, target="A", lr=0.02))
    assert result_path.stat().st_mtime_ns == before
    retrained = _train(_config(synthetic_data, tmp_path, target="A", lr=0.02, overwrite=True))
    assert result_path.stat().st_mtime_ns != before
    assert json.loads((config.run_dir / "config.json").read_text())["lr"] == 0.02
    assert retrained["history"][0]["step"] == 2
    assert not list(config.run_dir.glob(".replaced-*"))  # the old run goes once the new is done


@pytest.mark.slow
def test_a_finished_net_whose_data_or_base_changed_is_stale(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    workdir = tmp_path / "runs"
    _train(_config(data, workdir, target="A"))
    _train(_config(data, workdir, source="A", n=1))
    # baseA retrained: A1B copied layers that are no longer baseA's.
    _train(_config(data, workdir, target="A", overwrite=True, lr=0.03))
    with pytest.raises(train.RunError, match="baseA has been retrained since it copied"):
        _train(_config(data, workdir, source="A", n=1, lr=0.03))
    # The same split name prepared again from other classes.
    prepare(source="synthetic", split="random:0", out=data, progress=False, overwrite=True,
            synthetic=SyntheticSpec(num_classes=8, image_size=28, channels=1,
                                    train_per_class=24, validation_per_class=8, seed=0))
    with pytest.raises(train.RunError, match="half A has been prepared again with other classes"):
        _train(_config(data, workdir, target="A", lr=0.03))


@pytest.mark.parametrize("change, reason", [
    ("image_size", "half A has been prepared again with 32x32x1 images"),
    ("images", "half A has been prepared again with other images"),
    ("weights", "its weights file model.weights.h5 is missing"),
])
@pytest.mark.slow
def test_a_finished_net_is_stale_once_its_images_or_its_weights_change(
        synthetic_data, tmp_path, change, reason):
    """The same classes are not the same data: a half prepared again at another image size or
    from other images, or a run whose weights file is gone, no longer answers for the run; main
    and the grid say why, and --overwrite retrains it."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    workdir = tmp_path / "runs"
    _train(_config(data, workdir, target="A"))
    if change == "weights":
        (workdir / "synthetic" / "random_0" / "seed0" / "baseA" / "model.weights.h5").unlink()
    else:
        spec = dict(num_classes=10, image_size=28, channels=1, train_per_class=24,
                    validation_per_class=8, seed=0)
        spec.update(image_size=32) if change == "image_size" else spec.update(seed=5)
        prepare(source="synthetic", split="random:0", out=data, progress=False, overwrite=True,
                synthetic=SyntheticSpec(**spec))
    with pytest.raises(train.RunError, match=reason):
        _train(_config(data, workdir, target="A"))
    grid_args = ["--dry_run", f"--workdir={workdir}", "--experiments=transfer",
                 f"--flagfile={REPO / 'flags/smoke.flags'}", "--", f"--data_dir={data}",
                 "--dataset=synthetic", f"--lr={_config(data, workdir).lr}"]
    with pytest.raises(grid.GridError, match=f"random_0/seed0/baseA: {reason}"):
        grid.main(grid_args, out=io.StringIO())
    assert _train(_config(data, workdir, target="A", overwrite=True))["steps"] == 4


def test_a_run_centred_on_another_mean_image_is_stale_only_where_the_mean_differs():
    """--mean_image changes what a transfer net saw, not what a base net saw; runs recorded
    before the flag existed subtracted their target half's mean."""
    def recorded_before_the_flag(config):
        record = config.to_json()
        del record["mean_image"], record["mean_half"]
        return record
    a2b = config_lib.Config(source="A", target="B", n=2)
    assert run_records.settings_changed(a2b, recorded_before_the_flag(a2b)) == [
        "the mean image of half B (now half A, --mean_image=base)"]
    as_before = dataclasses.replace(a2b, mean_image="target")
    assert run_records.settings_changed(as_before, recorded_before_the_flag(a2b)) == []
    assert run_records.settings_changed(a2b, a2b.to_json()) == []
    base = config_lib.Config(target="B")
    for mean_image in config_lib.MEAN_IMAGES:
        assert run_records.settings_changed(dataclasses.replace(base, mean_image=mean_image),
                                            recorded_before_the_flag(base)) == []


def _main(data_dir, workdir, *extra):
    return [sys.executable, "-m", "keras_transfer.main", f"--flagfile={REPO / 'flags/smoke.flags'}",
            f"--data_dir={data_dir}", "--dataset=synthetic", f"--workdir={workdir}",
            "--steps=300", "--eval_every=10", "--eval_steps=1", "--histogram_every=1000", *extra]


@pytest.mark.slow
def test_a_resumed_run_keeps_its_settings_or_refuses_naming_the_flag(synthetic_data, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run_dir = tmp_path / "synthetic" / "random_0" / "seed0" / "baseB"
    proc = subprocess.Popen(_main(synthetic_data, tmp_path), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not list((run_dir / "backup").glob("ckpt-*.index")):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    started = (run_dir / "config.json").read_text()
    # One refused start with four changed flags: the refusal names each of them.
    changes = {"--lr=0.02": "--lr=0.01 (now 0.02)", "--batch_size=4": "--batch_size=8 (now 4)",
               "--steps=200": "--steps=300 (now 200)",
               "--fc8_outputs=12": "--fc8_outputs=0 (now 12)"}
    refused = subprocess.run(_main(synthetic_data, tmp_path, *changes), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "was started with --" in refused.stderr and "has a backup" in refused.stderr
    for recorded in changes.values():
        assert recorded in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (run_dir / "config.json").read_text() == started
    resumed = subprocess.run(_main(synthetic_data, tmp_path), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "from its backup at step" in resumed.stdout
    config = json.loads((run_dir / "config.json").read_text())
    result = json.loads((run_dir / "result.json").read_text())
    assert config["steps"] == result["steps"] == 300
    assert config["batch_size"] == 8 and config["lr"] == 0.01


@pytest.mark.slow
def test_the_retrain_hint_for_a_damaged_base_retrains_it(synthetic_data, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    base = _config(synthetic_data, tmp_path, target="A")
    _train(base)
    weights = base.run_dir / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(train.RunError) as refused:
        _train(_config(synthetic_data, tmp_path, source="A", n=2))
    hint = str(refused.value).split("Retrain baseA:\n  ")[1].splitlines()[0]
    assert hint.startswith("python -m keras_transfer.main --source=none --target=A")
    assert hint.endswith("--overwrite")
    args = shlex.split(hint)
    retrained = subprocess.run([sys.executable, *args[1:]], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=300)
    assert retrained.returncode == 0, retrained.stderr[-2000:]
    assert "baseA done" in retrained.stdout
    assert _train(_config(synthetic_data, tmp_path, source="A", n=2))["steps"] == 4


@pytest.mark.parametrize("record, damage", [("config.json", b"{trunc"), ("result.json", b"\xff\xfe"),
                                            ("result.json", b"[1, 2]")])
@pytest.mark.slow
def test_a_corrupt_base_record_is_named_with_the_command_that_retrains_it(
        synthetic_data, tmp_path, record, damage):
    base = _config(synthetic_data, tmp_path, target="A")
    _train(base)
    (base.run_dir / record).write_bytes(damage)
    transfer = _config(synthetic_data, tmp_path, source="A", n=2)
    with pytest.raises(train.RunError, match=f"(?s)baseA's {record} in .* is unreadable.*"
                                             "--source=none --target=A.*--overwrite"):
        _train(transfer)
    assert not transfer.run_dir.exists()


@pytest.mark.parametrize("damage", [b"garbage", b""])
def test_a_damaged_mean_image_is_named_before_anything_is_written(synthetic_data, tmp_path,
                                                                  damage):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    (data / "synthetic" / "random_0" / "B" / "mean.npy").write_bytes(damage)
    config = _config(data, tmp_path / "runs", target="B")
    with pytest.raises(train.RunError, match="the mean image .*mean.npy is damaged.*--overwrite"):
        _train(config)
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory):
    """Images of 1x1 pixels, which data_prep makes and no network takes; and a half of one
    class, which data_prep refuses to make (its manifest is cut down to stand for data
    prepared before it did)."""
    out = tmp_path_factory.mktemp("odd")
    for name, size in {"one_class": 28, "one_pixel": 1}.items():
        prepare(source="synthetic", split="random:0", out=out / name, progress=False,
                synthetic=SyntheticSpec(num_classes=4, image_size=size, channels=1,
                                        train_per_class=8, validation_per_class=4, seed=0))
    manifest_path = out / "one_class" / "synthetic" / "random_0" / "A" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(num_classes=1, classes=manifest["classes"][:1])
    manifest_path.write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("data, flags, message", [
    (None, dict(steps=0, epochs=0), r"--steps=0 and --epochs=0 train nothing"),
    (None, dict(steps=2_000_000_000, stretch=2), r"more steps than a run can count"),
    (None, dict(steps=0, epochs=1e9), r"--epochs=1000000000.0 is \d+ steps, more than"),
    (None, dict(steps=2_000_000_000, eval_every=1), r"2000000000 evaluation points.*larger "
                                                     r"--eval_every"),
    ("one_class", {}, r"half A of random_0 has 1 class: a classifier needs at least 2"),
    ("one_pixel", {}, r"--model=small takes crops of at least 1x1 pixels, not the 1x1 images "
                      r"cropped to -1"),
    ("one_pixel", dict(model="caffenet"), r"--model=caffenet crops 227x227 pixels, larger than "
                                          r"the 1x1 images.*--image_size"),
    (None, dict(model="caffenet", crop=20), r"--model=caffenet takes crops of at least 67x67 "
                                            r"pixels, not --crop=20"),
], ids=["no_steps", "too_many_steps", "too_many_epochs", "too_many_evaluations", "one_class",
        "one_pixel", "default_crop_too_large", "crop_too_small"])
def test_a_run_that_means_nothing_is_refused_before_anything_is_written(
        synthetic_data, odd_data, tmp_path, data, flags, message):
    data_dir = odd_data / data if data else synthetic_data
    config = _config(data_dir, tmp_path / "runs", target="A", **flags)
    with pytest.raises(train.RunError, match=message):
        _train(config)
    assert not (tmp_path / "runs").exists()


def test_a_split_file_of_the_same_name_is_judged_by_its_classes(tmp_path):
    """classes:a/s.json and classes:b/s.json share the folder classes_s: data prepared from one
    is refused for the other when their classes differ, and used when they are the same."""
    for folder, halves in {"a": {"A": [0, 1], "B": [2, 3]}, "b": {"A": [4, 5], "B": [6, 7]},
                           "c": {"A": [1, 0], "B": [3, 2]}}.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "s.json").write_text(json.dumps(halves))
    data = tmp_path / "data"
    prepare(source="synthetic", split=f"classes:{tmp_path / 'a/s.json'}", out=data,
            progress=False, synthetic=SyntheticSpec(num_classes=8, image_size=28, channels=1,
                                                    train_per_class=8, validation_per_class=4,
                                                    seed=0))
    with pytest.raises(train.RunError, match=r"was prepared for --split=classes:.*a/s.json, whose "
                                             r"half A holds other classes \(\[0, 1\]\) than "
                                             r"--split=classes:.*b/s.json's \(\[4, 5\]\).*another "
                                             r"name"):
        _train(_config(data, tmp_path / "runs", target="A", split=f"classes:{tmp_path / 'b/s.json'}"))
    assert not (tmp_path / "runs").exists()
    same = _train(_config(data, tmp_path / "runs", target="A",
                          split=f"classes:{tmp_path / 'c/s.json'}"))
    assert same["data"]["classes"] == [0, 1]

