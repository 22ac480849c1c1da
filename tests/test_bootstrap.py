"""The shell scripts parse, and bootstrap.sh reads its options before it does anything: SLURM
only with --with-slurm, and an unknown option refused with nothing set up. (What needs apt-get
is not run here.)"""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["bootstrap.sh", "launch.sh", ".ci/run"])
def test_the_scripts_parse(script):
    done = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _bootstrap(tmp_path, *args):
    """bootstrap.sh run from a copy in an empty folder, where anything it set up would show."""
    shutil.copy(REPO / "bootstrap.sh", tmp_path / "bootstrap.sh")
    return subprocess.run(["bash", str(tmp_path / "bootstrap.sh"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def test_help_names_the_slurm_option_and_sets_up_nothing(tmp_path):
    done = _bootstrap(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "--with-slurm" in done.stdout and "slurm-wlm" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bootstrap.sh"]


def test_an_unknown_option_is_one_line_and_sets_up_nothing(tmp_path):
    done = _bootstrap(tmp_path, "--with-slurm", "--withslurm")
    assert done.returncode == 2
    assert done.stderr == ("bootstrap.sh: unknown option --withslurm; usage: ./bootstrap.sh "
                           "[--with-slurm] (see --help)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bootstrap.sh"]
