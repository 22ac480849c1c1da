"""The benchmark command runs and reports what it measured (its figures are not checked: speed
is the machine's, not the code's)."""
import json
import re

import pytest

from data_prep_helpers import run_cli


@pytest.mark.slow
def test_bench_measures_the_small_model_and_a_matmul():
    done = run_cli("--only=matmul,small,batchnorm", "--steps=1", "--warmup_steps=1",
                   "--small_batch=8", "--matmul_size=64", module="keras_transfer.bench",
                   timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^matmul float32 64\^2: [0-9.]+ GFLOP/s$", done.stdout, re.M)
    assert re.search(r"^small 28px float32  batch 8: \d+ images/s \(2\.17 M multiply-adds",
                     done.stdout, re.M)
    assert re.search(r"^small 28px bfloat16 batch 8: \d+ images/s", done.stdout, re.M)
    assert re.search(r"^resnet_small 28px train step, batch 8: FusedBatchNormalization [0-9.]+ "
                     r"ms, Keras BatchNormalization [0-9.]+ ms \([0-9.]+x slower\)$",
                     done.stdout, re.M)
    assert "goal:" not in done.stdout  # neither goal's figures were measured


@pytest.mark.slow
def test_bench_refuses_bad_batch_sizes_and_data_dirs(tmp_path):
    bad_batch = run_cli("--only=caffenet", "--caffenet_batch=256,abc",
                        module="keras_transfer.bench")
    assert bad_batch.returncode != 0
    assert "--caffenet_batch: expected positive integers" in bad_batch.stderr
    no_data = run_cli("--only=pipeline", f"--data_dir={tmp_path}", module="keras_transfer.bench")
    assert no_data.returncode != 0
    assert "manifest.json does not exist" in no_data.stderr


@pytest.mark.slow
def test_bench_trains_a_grid_packed_and_one_net_per_process(synthetic_data, tmp_path):
    """The grid benchmark on tiny data: both ways train the same 7 nets and it says where the
    processes' time went (its ratios are the machine's and are not checked)."""
    done = run_cli("--only=grid", "--grid_ways=packed,one-per-process", "--grid_layers=1",
                   "--grid_steps=2", "--grid_flagfile=flags/smoke.flags",
                   f"--grid_data_dir={synthetic_data}", "--grid_dataset=synthetic",
                   f"--grid_workdir={tmp_path}", module="keras_transfer.bench", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for way in ("packed", "one-per-process"):
        assert re.search(rf"^grid {way} *: 7 nets in \d+ s = \d+ nets/hour, \d+ training "
                         r"images/s, mean final top-1 [0-9.]+$", done.stdout, re.M), done.stdout
        assert len(list((tmp_path / way).rglob("result.json"))) == 7
    assert re.search(r"^  where the 2 processes' \d+ s went: startup \d+ s \(\d+%\).* train ",
                     done.stdout, re.M)
    assert re.search(r"^ratio: packed / one-per-process = [0-9.]+x nets per hour$", done.stdout,
                     re.M)
    assert re.search(r"^  computed [0-9.]+ TFLOP \(training [0-9.]+, evaluation [0-9.]+\) in \d+ "
                     r"s: \d+ GFLOP/s = \d+% of the machine's float32 matmul rate \(\d+ GFLOP/s\)$",
                     done.stdout, re.M), done.stdout
    packed = [json.loads(p.read_text()) for p in (tmp_path / "packed").rglob("result.json")]
    assert max(len(r["pack"]) for r in packed) > 1  # the default packs the small nets
    single = [json.loads(p.read_text()) for p in (tmp_path / "one-per-process").rglob("result.json")]
    assert all(r["pack"] == [r["run"]] for r in single)
    assert "ratio: packed / peer" not in done.stdout  # the peer was not asked for
    assert "goal: the demo's grid >= " not in done.stdout  # nor its ratio to the peer's
    assert "goal: the demo's grid computes at >= 65% of the float32" in done.stdout


@pytest.mark.slow
def test_bench_grid_refuses_data_that_is_not_prepared(tmp_path):
    done = run_cli("--only=grid", f"--grid_data_dir={tmp_path}", module="keras_transfer.bench")
    assert done.returncode != 0
    assert "holds no prepared data" in done.stderr and "python -m data_prep" in done.stderr
