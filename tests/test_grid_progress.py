"""The local grid's progress: the ETA from the grid's cost model (made-up costs, a clock the test
moves), running processes credited with their share so far, status lines where stderr is not a
terminal, a live bar where it is, a local grid of sleeping runs, and a tiny real grid that prints
its status lines (keras_transfer/grid/progress.py)."""
import io
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep import quiet_tensorflow
from data_prep_helpers import prepare_four_small_classes
from keras_transfer import config, grid
from keras_transfer.grid.cost import net_costs
from keras_transfer.grid.progress import (CREDIT_CAP, Counts, GridProgress, Process, duration,
                                          eta_seconds)

REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_eta_is_the_cost_left_over_the_cost_trained_per_second():
    assert eta_seconds(trained_cost=30.0, cost_to_train=90.0, elapsed=60.0) == 180.0
    assert eta_seconds(trained_cost=30.0, cost_to_train=0.0, elapsed=60.0) == 0.0
    assert eta_seconds(trained_cost=0.0, cost_to_train=90.0, elapsed=60.0) is None
    assert duration(3725.4) == "1:02:05"


def test_status_lines_when_a_net_ends_and_once_a_minute_otherwise():
    clock, stream = Clock(), io.StringIO()
    progress = GridProgress({"a": 1.0, "b": 1.0}, total=2, stream=stream, clock=clock)
    counts = Counts(done=0, running=1, failed=0, left=1)

    clock.now += 30
    progress.show(counts, [], [Process(("a",), 30)], ["b"])
    assert stream.getvalue() == ""  # nothing ended, and less than a minute has passed
    clock.now += 31
    progress.show(counts, [], [Process(("a",), 61)], ["b"])
    assert stream.getvalue() == ("[grid] progress: 0/2 nets done, 1 running, 0 failed, 1 left | "
                                 "elapsed 0:01:01 | ETA not known yet (no net has finished)\n")
    clock.now += 1
    progress.show(counts, [], [Process(("a",), 62)], ["b"])
    assert len(stream.getvalue().splitlines()) == 1  # the minute starts again
    progress.show(Counts(done=0, running=0, failed=1, left=1), [Process((), 62)], [], ["b"],
                  net_ended=True)
    assert len(stream.getvalue().splitlines()) == 2  # a net ended (here it failed)


def test_the_eta_prices_the_nets_left_at_the_cost_trained_per_second():
    costs = {"a": 1.0, "b": 3.0, "c": 6.0, "before": 100.0}
    clock, stream = Clock(), io.StringIO()
    progress = GridProgress(costs, total=4, stream=stream, clock=clock)
    # `a` (cost 1) took 20 s: b (just started) and c (cost 9) take 180 s at that rate. The net
    # done before the launch (`before`) counts for neither side.
    clock.now += 20
    a = Process(("a",), 20)
    progress.show(Counts(done=2, running=1, failed=0, left=1), [a], [Process(("b",), 0)], ["c"],
                  net_ended=True)
    assert stream.getvalue().splitlines()[-1] == (
        "[grid] progress: 2/4 nets done, 1 running, 0 failed, 1 left | elapsed 0:00:20 | "
        "ETA 0:03:00")
    # c failed: only b is left, at a's rate still.
    progress.show(Counts(done=2, running=1, failed=1, left=0), [a], [Process(("b",), 0)], [],
                  net_ended=True)
    assert stream.getvalue().splitlines()[-1].endswith("1 failed, 0 left | elapsed 0:00:20 | "
                                                       "ETA 0:01:00")
    # b finished 40 s later: nothing is left.
    clock.now += 40
    progress.show(Counts(done=3, running=0, failed=1, left=0), [a, Process(("b",), 40)], [], [],
                  net_ended=True)
    assert stream.getvalue().splitlines()[-1].endswith("elapsed 0:01:00 | ETA 0:00:00")


def test_running_packs_are_credited_so_the_eta_falls_while_they_run():
    # Two slots, every net of cost 1. Pack A (2 nets) ends after 100 s: 0.02 per second of a
    # process. Pack B (6 nets) has run as long, pack C (4 nets) starts; 4 nets are left.
    a, b, c = ("a0", "a1"), tuple(f"b{i}" for i in range(6)), tuple(f"c{i}" for i in range(4))
    left = [f"d{i}" for i in range(4)]
    costs = dict.fromkeys(a + b + c + tuple(left), 1.0)
    clock, stream = Clock(), io.StringIO()
    progress = GridProgress(costs, total=len(costs), stream=stream, clock=clock)
    finished = [Process(a, 100)]
    clock.now += 100
    counts = Counts(done=2, running=10, failed=0, left=4)
    progress.show(counts, finished, [Process(b, 100), Process(c, 0)], left, net_ended=True)
    # B counts 2 as trained: 12 to train at 2 slots x 0.02 per second.
    assert stream.getvalue().splitlines()[-1].endswith("elapsed 0:01:40 | ETA 0:05:00")
    # A minute on, at that rate: a minute less, not more.
    clock.now += 60
    running = [Process(b, 160), Process(c, 60)]
    progress.show(counts, finished, running, left)
    assert stream.getvalue().splitlines()[-1].endswith("elapsed 0:02:40 | ETA 0:04:00")
    # A process that failed trained nothing: its time does not slow the rate.
    assert progress.eta(finished + [Process((), 150)], running, left) == pytest.approx(240)
    # With nothing running, the cost left over the cost trained per second since the launch.
    assert progress.eta(finished + [Process(b, 160)], [], ["d0"]) == pytest.approx(160 / 8)


def test_a_process_that_overruns_is_never_counted_as_done():
    # `a` (cost 1) took 10 s; pack b (cost 2) has run 1000 s, 50 times what that rate predicts.
    clock, stream = Clock(), io.StringIO()
    progress = GridProgress({"a": 1.0, "b1": 1.0, "b2": 1.0}, total=3, stream=stream,
                            clock=clock)
    clock.now += 1000
    eta = progress.eta([Process(("a",), 10)], [Process(("b1", "b2"), 1000)], [])
    credit = CREDIT_CAP * 2
    assert eta == pytest.approx((2 - credit) * 1000 / (1 + credit))
    assert eta > 0


def test_no_eta_before_a_process_has_trained_a_net_in_this_launch():
    clock, stream = Clock(), io.StringIO()
    progress = GridProgress({"a": 1.0, "b": 1.0, "c": 1.0}, total=3, stream=stream, clock=clock)
    clock.now += 600
    running = [Process(("a",), 600), Process(("b",), 600)]
    assert progress.eta([], running, ["c"]) is None
    # A process that failed trained nothing: still no rate to go by.
    assert progress.eta([Process((), 30)], running, ["c"]) is None
    progress.show(Counts(done=0, running=2, failed=0, left=1), [], running, ["c"])
    assert stream.getvalue().endswith("ETA not known yet (no net has finished)\n")


def test_a_terminal_gets_a_live_bar_with_the_counts_and_the_eta():
    leader, follower = os.openpty()
    with open(follower, "w") as terminal:
        clock = Clock()
        progress = GridProgress({"a": 1.0, "b": 1.0, "c": 2.0}, total=3, stream=terminal,
                                clock=clock)
        clock.now += 10
        progress.show(Counts(done=1, running=1, failed=0, left=1), [Process(("a",), 10)],
                      [Process(("b",), 0)], ["c"], net_ended=True)
        progress.close()
    drawn = b""
    while select.select([leader], [], [], 1.0)[0]:  # whatever the terminal got, in pieces
        try:
            piece = os.read(leader, 65536)
        except OSError:  # the other end is closed and everything was read
            break
        if not piece:
            break
        drawn += piece
    os.close(leader)
    drawn = drawn.decode()
    assert "[grid] 1/3 nets  33%|" in drawn, drawn
    assert "1 running, 0 failed, 1 left | elapsed 0:00:10 | ETA 0:00:30" in drawn, drawn
    assert "[grid] progress:" not in drawn  # the bar, not status lines


class _SleepingPlan(grid.Plan):
    """A plan whose runs sleep (SLEEP seconds by net name), then leave a result behind."""
    SLEEP = {"baseA": 3, "baseB": 5}

    def command(self, pack):
        [net] = pack
        result = self.run_dir(net) / "result.json"
        return [sys.executable, "-c", f"import pathlib, time; time.sleep({self.SLEEP[net.name]}); "
                f"p = pathlib.Path({str(result)!r}); p.parent.mkdir(parents=True); "
                "p.write_text('{}')"]


def test_the_local_grid_credits_the_running_process_in_its_eta(tmp_path, capsys):
    # Two slots: baseA (cost 1) ends after ~3 s, while baseB (cost 100) has run about as long,
    # so it counts ~1 as trained: ETA ~ 99/2 x elapsed (untrained, it would be 100 x elapsed).
    nets = [net for net in grid.enumerate_nets(dataset="fashion_mnist", splits=["random:0"],
                                               seeds=[0], experiments=["transfer"])
            if net.name in _SleepingPlan.SLEEP]
    plan = _SleepingPlan(nets=nets, workdir=str(tmp_path), dataset="fashion_mnist",
                         data_dir="data", flagfile=None, extra_flags=[])
    costs = {net.key: 1.0 if net.name == "baseA" else 100.0 for net in nets}
    assert grid.run_local(plan, jobs=2, out=io.StringIO(), poll_seconds=0.1, costs=costs) == 0
    err = capsys.readouterr().err
    status = [line for line in err.splitlines()
              if line.startswith("[grid] progress: 1/2 nets done")]
    assert len(status) == 1, err
    times = re.search(r"elapsed (\d+):(\d\d):(\d\d) \| ETA (\d+):(\d\d):(\d\d)", status[0])
    h, m, s, eh, em, es = map(int, times.groups())
    elapsed, eta = 3600 * h + 60 * m + s, 3600 * eh + 60 * em + es
    assert 99 / 2 * 0.75 * elapsed < eta < 99 / 2 * 1.4 * elapsed, status


def test_frozen_nets_cost_less_and_nets_with_more_steps_more(tmp_path):
    preset = config.resolve(None, ["--steps=100", "--batch_size=10"])
    nets = grid.enumerate_nets(dataset=preset.dataset, splits=["random:0"], seeds=[0],
                               experiments=["transfer", "reduced"], targets=["B"],
                               n_values=[1, 7], reduced_examples=[10], reduced_data="half",
                               reduced_steps=300)
    costs = net_costs(grid.make_plan(nets, preset, workdir=str(tmp_path)), preset)
    cost = {key[2]: value for key, value in costs.items() if key[0] == "random_0"}
    assert cost["A7B"] < cost["A1B"] < cost["A1B+"] == cost["baseB"]
    reduced = next(value for key, value in costs.items() if key[0] != "random_0")
    assert reduced == 3 * cost["baseB"]  # a base net of its own solver: 300 steps, not 100


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress_data")
    prepare_four_small_classes(root)
    return root


@pytest.mark.slow
def test_a_tiny_local_grid_prints_status_lines_with_the_eta(tmp_path, data_dir):
    # R1B, then R7B (one process at a time): after the first, the ETA is the elapsed time
    # scaled by the second's cost over the first's. Run as a user runs it: without the test
    # suite's TF_CPP_MIN_LOG_LEVEL, so the runs' logs show whether TensorFlow's notices are gone.
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet_tensorflow.DEFAULT_MARK)}
    proc = subprocess.run(
        [sys.executable, "-m", "keras_transfer.grid", "--experiments=random",
         "--random_control=half", "--layers=1,7", "--jobs=1", "--pack=1", "--workdir=runs",
         f"--flagfile={REPO / 'flags' / 'smoke.flags'}", "--", "--dataset=synthetic",
         f"--data_dir={data_dir}"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("R1B", "R7B"):  # the line per finished net stays
        assert re.search(rf"\| finished random_0/seed0/{name} in \d+s", proc.stdout), proc.stdout
    status = [line for line in proc.stderr.splitlines() if line.startswith("[grid] progress:")]
    assert len(status) == 2, proc.stderr
    first = re.fullmatch(r"\[grid\] progress: 1/2 nets done, 1 running, 0 failed, 0 left \| "
                         r"elapsed (\d+):(\d\d):(\d\d) \| ETA (\d+):(\d\d):(\d\d)", status[0])
    assert first, status
    h, m, s, eh, em, es = map(int, first.groups())
    elapsed, eta = 3600 * h + 60 * m + s, 3600 * eh + 60 * em + es
    # Priced as blocks (cost.net_costs): 8 + 2 x the blocks that train, of R1B 7, of R7B 1.
    assert abs(eta - elapsed * (8 + 2 * 1) / (8 + 2 * 7)) <= 1.5, status
    assert re.fullmatch(r"\[grid\] progress: 2/2 nets done, 0 running, 0 failed, 0 left \| "
                        r"elapsed \d+:\d\d:\d\d \| ETA 0:00:00", status[1]), status
    logs = "".join(log.read_text() for log in (tmp_path / "runs" / "logs").rglob("*.log"))
    assert "R1B done" in logs and "R7B done" in logs
    for notice in ("absl::InitializeLog", "oneDNN", "cuInit", "I0000"):
        assert notice not in logs, logs
