"""TensorFlow's start-up notices are left out of the project's processes, its errors are not, a
TF_CPP_MIN_LOG_LEVEL the user set is left alone, and Keras' unused optional libraries are not
loaded with it (data_prep/quiet_tensorflow.py)."""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep import quiet_tensorflow

REPO = Path(__file__).resolve().parents[1]

# Start-up lines of TensorFlow 2.21 on a machine without a GPU, as printed.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796575243.812027   24501 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1796575243.814456   24501 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "I0000 00:00:1796575272.632426   26563 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "2024-05-07 19:48:23.508076: W tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] TF-TRT "
    "Warning: Could not find TensorRT",
]
CUINIT = ("E0000 00:00:1796575253.520514   25023 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
KEPT = [
    "E0000 00:00:1796575253.520514   25023 coordination_service_agent.cc:332] Failed to "
    "connect to the coordination service",
    "F0000 00:00:1796575253.520514   25023 logging.cc:62] Check failed: ok",
    "/x/dataset_ops.py:463: UserWarning: something a user should see",
    "Traceback (most recent call last):",
    "error: --n=8 is out of range",
]


@pytest.mark.parametrize("line", NOISE)
def test_start_up_notices_are_noise(line):
    assert quiet_tensorflow.is_startup_noise(line, no_gpu_expected=False)


@pytest.mark.parametrize("line", KEPT)
def test_errors_and_everything_else_are_kept(line):
    assert not quiet_tensorflow.is_startup_noise(line, no_gpu_expected=True)


def test_cuinit_failure_is_noise_only_where_no_gpu_is_expected():
    no_driver = "\n".join([*NOISE, CUINIT, KEPT[0]]) + "\n"
    out = io.BytesIO()
    quiet_tensorflow.forward_without_noise(io.BytesIO(no_driver.encode()), out)
    assert out.getvalue().decode() == KEPT[0] + "\n"  # the driver notice came before it

    with_driver = CUINIT + "\n"
    out = io.BytesIO()
    quiet_tensorflow.forward_without_noise(io.BytesIO(with_driver.encode()), out)
    assert out.getvalue().decode() == with_driver  # a GPU machine whose GPUs fail: shown

    out = io.BytesIO()
    quiet_tensorflow.forward_without_noise(io.BytesIO(with_driver.encode()), out,
                                           gpus_hidden=True)
    assert out.getvalue() == b""  # CUDA_VISIBLE_DEVICES="" hides them on purpose


NOTICES = ("absl::InitializeLog", "oneDNN", "cuda drivers", "cuInit", "This TensorFlow binary",
           "I0000", "W0000", "E0000")


def _users_environment():
    """The environment a user runs the project in: without the test suite's
    TF_CPP_MIN_LOG_LEVEL and CUDA_VISIBLE_DEVICES."""
    return {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES",
                         quiet_tensorflow.DEFAULT_MARK)}


def _main_stderr(tmp_path, data_dir, **env):
    """stderr of one training step of `python -m keras_transfer.main`, run as a user runs it."""
    base = _users_environment()
    proc = subprocess.run(
        [sys.executable, "-m", "keras_transfer.main", f"--flagfile={REPO / 'flags/smoke.flags'}",
         f"--data_dir={data_dir}", "--dataset=synthetic", f"--workdir={tmp_path}", "--steps=1",
         "--eval_every=1", "--target=A"],
        cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


@pytest.mark.slow
def test_main_prints_no_start_up_notices_unless_the_user_asks(synthetic_data, tmp_path):
    quiet = _main_stderr(tmp_path / "default", synthetic_data)
    for marker in NOTICES:
        assert marker not in quiet, quiet

    # The user's own level is left alone: at 0 TensorFlow's information lines are printed.
    everything = _main_stderr(tmp_path / "user", synthetic_data, TF_CPP_MIN_LOG_LEVEL="0")
    assert any(quiet_tensorflow.is_startup_noise(line, False)
               for line in everything.splitlines()), everything


@pytest.mark.slow
@pytest.mark.parametrize("case", ["the grid's dry run of one's own network",
                                  "train_net refusing a flag"])
def test_a_users_network_or_the_python_api_print_no_start_up_notices(synthetic_data, tmp_path,
                                                                     case):
    """Where the user's code or the API is first to import Keras, TensorFlow still starts
    through quiet_tensorflow."""
    command = {
        "the grid's dry run of one's own network": [
            "-m", "keras_transfer.grid", "--dry_run", "--experiments=transfer", "--targets=B",
            "--layers=1", f"--workdir={tmp_path / 'runs'}",
            f"--flagfile={REPO / 'flags/smoke.flags'}", "--", "--dataset=synthetic",
            f"--data_dir={synthetic_data}", "--model=docs/examples/my_model.py:tiny_convnet"],
        "train_net refusing a flag": [
            "-c", "import keras_transfer as kt\ntry:\n    kt.train_net(n=9)\n"
                  "except kt.Error as e:\n    print(e)"],
    }[case]
    proc = subprocess.run([sys.executable, *command], cwd=REPO, env=_users_environment(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "# 6 nets in" in proc.stdout or "--n=9 is out of range" in proc.stdout, proc.stdout
    for marker in NOTICES:
        assert marker not in proc.stderr, proc.stderr


def _after_importing_tensorflow(first=""):
    """What a fresh Python process sees of pandas and matplotlib once it has imported TensorFlow
    through quiet_tensorflow (after `first`, a statement run before)."""
    script = f"""
import sys
{first}
from data_prep import quiet_tensorflow
quiet_tensorflow.import_tensorflow()
import keras
from keras.src.trainers.data_adapters import array_slicing
print([m for m in quiet_tensorflow.UNUSED_BY_KERAS if m in sys.modules])
print(array_slicing.pandas is not None)
import pandas, matplotlib.pyplot
print(pandas.DataFrame({{"a": [1]}}).shape, matplotlib.pyplot.figure is not None)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


@pytest.mark.slow
def test_keras_unused_optional_libraries_are_not_loaded_yet_import_afterwards():
    # Not loaded with TensorFlow (Keras takes pandas for absent), importable right after.
    assert _after_importing_tensorflow() == ["[]", "False", "(1, 1) True"]
    # One the process imported before TensorFlow is left alone: Keras uses it.
    assert _after_importing_tensorflow("import pandas") == ["['pandas']", "True", "(1, 1) True"]
