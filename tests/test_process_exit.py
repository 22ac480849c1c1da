"""Commands end without Python's teardown of TensorFlow, yet say everything and exit as
SystemExit would."""
import os
import subprocess
import sys

import pytest

from data_prep_helpers import REPO


def _exit_with(code_expression: str) -> subprocess.CompletedProcess:
    # Printed without a newline into a pipe: lost unless exit_now flushes it.
    script = ("import sys\nfrom data_prep.process_exit import exit_now\n"
              "print('written', end='')\nprint('said', end='', file=sys.stderr)\n"
              f"exit_now({code_expression})\n"
              "print('never reached')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as usual
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("code_expression, status", [("None", 0), ("0", 0), ("3", 3),
                                                      ("143", 143)])
def test_exit_now_flushes_and_keeps_the_status(code_expression, status):
    done = _exit_with(code_expression)
    assert (done.returncode, done.stdout, done.stderr) == (status, "written", "said")


def test_exit_now_with_a_message_prints_it_and_exits_1():
    done = _exit_with("'error: the reason'")
    assert done.returncode == 1
    assert done.stdout == "written" and done.stderr == "saiderror: the reason\n"
