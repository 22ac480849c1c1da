"""The benchmark command runs and reports what it measured (its figures are not checked: speed
is the machine's, not the code's)."""
import re

from data_prep_helpers import run_cli


def test_bench_measures_the_small_model_and_a_matmul():
    done = run_cli("--only=matmul,small", "--steps=1", "--warmup_steps=1", "--small_batch=8",
                   "--matmul_size=64", module="keras_transfer.bench", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^matmul float32 64\^2: [0-9.]+ GFLOP/s$", done.stdout, re.M)
    assert re.search(r"^small 28px float32  batch 8: \d+ images/s \(2\.17 M multiply-adds",
                     done.stdout, re.M)
    assert re.search(r"^small 28px bfloat16 batch 8: \d+ images/s", done.stdout, re.M)
    assert "goal:" not in done.stdout  # neither goal's figures were measured


def test_bench_refuses_bad_batch_sizes_and_data_dirs(tmp_path):
    bad_batch = run_cli("--only=caffenet", "--caffenet_batch=256,abc",
                        module="keras_transfer.bench")
    assert bad_batch.returncode != 0
    assert "--caffenet_batch: expected positive integers" in bad_batch.stderr
    no_data = run_cli("--only=pipeline", f"--data_dir={tmp_path}", module="keras_transfer.bench")
    assert no_data.returncode != 0
    assert "manifest.json does not exist" in no_data.stderr
