"""The local backend: trains the plan's nets on this machine, N processes at a time, resumably.

Each process trains a pack of nets (`python -m keras_transfer.main --nets=...`, see
keras_transfer/steps.py), or one net. Packs are formed when a process slot frees up, from the
nets whose base nets are done, so packs never wait on each other. Several launchers may share
one workdir (a per-net lock decides who trains a net), a net whose base failed fails at once
instead of waiting forever, and SIGTERM or SIGINT (Ctrl-C) stops the runs so they save a backup
and the next launch resumes them.

Each run is its own process group, so a terminal's Ctrl-C (which signals the foreground group)
reaches the launcher alone, and the launcher stops its runs; and each run gets SIGTERM when the
launcher dies, however it dies (Linux's parent-death signal), so no net trains on untracked.
"""
from __future__ import annotations

import ctypes
import dataclasses
import datetime
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from data_prep.locking import FileLock
from keras_transfer import exit_status, naming
from keras_transfer.grid.plan import Plan
from keras_transfer.grid.progress import Counts, GridProgress, Process


@dataclasses.dataclass
class _Running:
    nets: list
    proc: subprocess.Popen
    locks: list
    log: object
    log_path: object
    started: float


class _CannotStart(Exception):
    """A run could not be started (its log or lock cannot be written): stop the others, exit."""


class _Stop(Exception):
    """SIGTERM (or SIGINT) reached the launcher: stop the runs, let them save, exit."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_local(plan: Plan, jobs: int, out=sys.stdout, poll_seconds: float = 0.5,
              costs: dict | None = None) -> int:
    """Trains the nets that are not done, `jobs` processes at a time, base nets before their
    dependants. Prints a line to `out` for each event, and the progress with an ETA to stderr
    (grid/progress.py), from `costs` (net key -> cost, cost.net_costs; default: alike).

    Returns 0 if every net ends with a result.json, 1 if any failed, else 143 if a net was
    preempted (stopped by SIGTERM or SIGINT, caught or not: it resumes from its last backup, and
    its dependants wait, on the next launch; see exit_status.stopped). A net whose base failed
    here is failed at once, naming the base. A net locked by another launcher is left to it and
    waited for. SIGTERM or SIGINT to the launcher stops every run and returns 128 + the signal.
    """
    total = len(plan.nets)
    by_key = {net.key: net for net in plan.nets}
    done = {net.key for net in plan.nets if plan.is_done(net)}
    pending = [net for net in plan.nets if net.key not in done]
    failed: dict = {}  # key -> reason
    # Stopped by a signal (exit_status.stopped), and the nets waiting on them: not failures;
    # the next launch resumes them.
    preempted: dict = {}
    blocked: dict = {}
    running: list[_Running] = []
    skipped = len(done)
    finished: list[Process] = []  # the processes that ended in this launch: the nets they trained
    progress = GridProgress(costs if costs is not None else dict.fromkeys(by_key, 1.0), total)

    def say(message):
        busy = sum(len(r.nets) for r in running)
        progress.write(f"[grid] {len(done)} done, {busy} running, {len(pending)} left, "
                       f"{len(failed)} failed | {message}", out)

    def show_progress(net_ended):
        now = time.monotonic()
        in_runs = [Process(tuple(net.key for net in r.nets), now - r.started) for r in running]
        progress.show(Counts(done=len(done), running=sum(len(p.nets) for p in in_runs),
                             failed=len(failed), left=len(pending)),
                      finished, in_runs, [net.key for net in pending], net_ended)

    say(f"{naming.counted(total, 'net')}, {skipped} already done, "
        f"{naming.counted(jobs, 'process', 'processes')} at a time")

    # A signal that lands while a run is being started is held until the run is on `running`:
    # raised inside Popen it would leave a child training that nobody stops.
    # Once the runs are being stopped, a further signal (a second Ctrl-C) changes nothing.
    starting, stopping, held = False, False, []

    def on_signal(signum, frame):
        if stopping:
            return
        if starting:
            held.append(signum)
        else:
            raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while pending or running:
            net_ended = False
            for r in list(running):
                code = r.proc.poll()
                if code is None:
                    continue
                net_ended = True
                for lock in r.locks:
                    lock.release()
                r.log.close()
                running.remove(r)
                secs = time.monotonic() - r.started
                how = exit_status.stopped(code)
                trained = [net.key for net in r.nets if plan.is_done(net)]
                finished.append(Process(tuple(trained), secs))
                for net in r.nets:
                    if net.key in trained:
                        done.add(net.key)
                        say(f"finished {net.label} in {secs:.0f}s")
                    elif how:
                        preempted[net.key] = r.log_path
                        say(f"preempted {net.label}: {how}; the next launch resumes it")
                    else:
                        why = f"exit code {code}" if code else "exited 0 without result.json"
                        failed[net.key] = f"{why}; see {r.log_path}"
                        say(f"FAILED {net.label} ({failed[net.key]})")
            for net in list(pending):
                if plan.is_done(net):                     # finished by another launcher
                    pending.remove(net)
                    done.add(net.key)
                    say(f"{net.label} was finished by another launcher")
                    continue
                waiting = [k for k in net.needs if k in preempted]
                if waiting:
                    pending.remove(net)
                    blocked[net.key] = f"its base net {waiting[0][2]} was preempted"
                    say(f"not starting {net.label}: {blocked[net.key]}; the next launch runs it")
                    continue
                # A base counted done whose result is gone (deleted, set aside): trained again,
                # or its dependants would wait for it forever.
                for key in [k for k in net.needs if k in done and not plan.is_done(k)]:
                    done.discard(key)
                    if key in by_key:
                        pending.insert(0, by_key[key])
                        say(f"{by_key[key].label} is no longer finished (its result is gone): "
                            "training it again")
                    else:
                        failed[key] = "its result is gone"
                bad = [k for k in net.needs if k in failed]
                if bad:
                    pending.remove(net)
                    base = bad[0][2]
                    failed[net.key] = f"not run: its base net {base} failed ({failed[bad[0]]})"
                    say(f"FAILED {net.label}: {failed[net.key]}")
            while len(running) < jobs:
                starting = True
                claimed = None
                try:
                    claimed = _claim_pack(plan, [n for n in pending
                                                 if all(plan.is_done(k) for k in n.needs)])
                    if claimed:
                        pack, locks = claimed
                        running.append(_start(plan, pack, locks))
                        for net in pack:
                            pending.remove(net)
                except OSError as e:
                    for lock in (claimed[1] if claimed else []):
                        lock.release()
                    raise _CannotStart(f"cannot start a run: {e}. Fix the path (the grid writes "
                                       f"logs and locks under {plan.workdir}/logs) and run the "
                                       "same command again") from None
                starting = False
                if claimed:
                    what = pack[0].label if len(pack) == 1 else (
                        f"a pack of {len(pack)}: {', '.join(net.name for net in pack)}")
                    say(f"started {what} -> {running[-1].log_path}")
                if held:
                    raise _Stop(held[0])
                if not claimed:
                    break
            show_progress(net_ended)
            if pending or running:
                time.sleep(poll_seconds)
    except _CannotStart as e:
        stopping = True
        say(f"error: {e}; stopping {sum(len(r.nets) for r in running)} running nets (they save "
            "a backup and resume next time)")
        _stop_all(running)
        return 1
    except _Stop as stop:
        stopping = True
        say(f"{stop}: stopping {sum(len(r.nets) for r in running)} running nets "
            "(they save a backup and resume next time)")
        _stop_all(running)
        return 128 + stop.signum
    finally:
        progress.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    ran = len(done) - skipped
    resumable = len(preempted) + len(blocked)
    say(f"grid finished: {ran} trained, {skipped} were already done, {len(failed)} failed"
        + (f", {resumable} preempted or waiting on a preempted base (run the same command again "
           "to resume them)" if resumable else ""))
    for key, why in failed.items():
        print(f"[grid]   failed {key[0]}/seed{key[1]}/{key[2]}: {why}", file=out)
    if failed:
        return 1
    return exit_status.PREEMPTED if resumable else 0


def _claim_pack(plan: Plan, ready):
    """The first pack of ready nets this launcher could lock, with the locks; None if none.

    Nets another launcher holds are left to it; a net finished meanwhile is left out."""
    for pack in plan.packs(ready):
        claimed, locks = [], []
        try:
            for net in pack:
                lock = FileLock(plan.lock_path(net))
                if not lock.acquire():                # another launcher is training it
                    continue
                if plan.is_done(net):                 # it finished between our checks
                    lock.release()
                    continue
                claimed.append(net)
                locks.append(lock)
        except OSError:
            for lock in locks:
                lock.release()
            raise
        if claimed:
            return claimed, locks
    return None


def _start(plan: Plan, pack: list, locks: list) -> _Running:
    cmd = plan.command(pack)
    log_path = plan.log_path(pack[0]) if len(pack) == 1 else plan.pack_log_path(pack)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# {datetime.datetime.now().isoformat(timespec='seconds')} {socket.gethostname()} "
              f"launcher pid {os.getpid()}: {shlex.join(cmd)}\n")
    if len(pack) > 1:  # each net's own log says where its output is
        for net in pack:
            with open(plan.log_path(net), "a") as own:
                own.write(header + f"# trained in a pack of {len(pack)}; its output: {log_path}\n")
    log = open(log_path, "a")
    log.write(header)
    log.flush()
    # The run inherits the locks' file descriptors, so the locks outlive a killed launcher
    # exactly as long as the run itself does (which stops on its own: _child_setup).
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            pass_fds=tuple(lock.fd for lock in locks),
                            **_child_setup(os.getpid()))
    return _Running(pack, proc, locks, log, log_path, time.monotonic())


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl():
    """libc's prctl, looked up before any fork (the child only calls it), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None).prctl  # libc, which the interpreter is linked with
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    return prctl


_PRCTL = _prctl()


def _child_setup(launcher_pid: int) -> dict:
    """Popen's arguments that tie a run to this launcher: on Linux the run gets SIGTERM (saves a
    backup and stops) when the launcher dies, whatever killed it, and it is its own process
    group, so that signals meant for the launcher's group (a terminal's Ctrl-C) reach the
    launcher alone, which stops its runs itself. Elsewhere the run stays in the launcher's
    group, where a signal to the group reaches it too."""
    if _PRCTL is None:
        return {}

    # The signal comes when the thread that started the run ends: run_local's, the main thread
    # (it installs signal handlers), which ends with the launcher.
    def die_with_launcher():  # in the child, between fork and exec: no locks, no imports
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != launcher_pid:  # the launcher died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return {"process_group": 0, "preexec_fn": die_with_launcher}


def _stop_all(runs, grace_seconds: float = 60.0) -> None:
    runs = list(runs)
    for r in runs:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for r in runs:
        try:
            r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
        for lock in r.locks:
            lock.release()
        r.log.close()
