"""Ending a run on purpose: a stop asked for by a signal or a dead launcher, and divergence.

- `StopSignals`: while a run trains, the first SIGTERM or SIGINT only asks it to stop;
  the loop then finishes the minibatch, writes a snapshot with its checkpoint and
  raises `TrainingInterrupted`. A second signal ends the process at once (after a
  short grace: a launcher that passes on the signal its ranks also got from the
  terminal or the scheduler must not count twice).
- `StopAgreement`: ranks of a multi-process run must stop after the same minibatch,
  since the snapshot needs them all. Each minibatch every rank sends its own wish in
  a small all-reduce on a separate gloo group, without waiting; the next minibatch
  reads the answer. Nothing waits for the GPU.
- `watch_launcher`: a rank whose launching process has died stops as on SIGTERM
  and leaves after a grace period in any case, so no rank trains on as an orphan.
- `DivergenceGuard`: per phase, a device-side count of steps whose gradients were not
  finite (before the loop zeroes them), read once per tick together with the tick's
  loss statistics and the networks' weights. A tick that ends with non-finite
  losses or weights, or a phase none of whose steps had finite gradients, raises
  `TrainingDiverged` before anything of that tick is written.
"""

import os
import signal
import threading
import time

import torch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_GRACE_SEC = 2.0      # A second signal sooner than this is the first one delivered twice.
LAUNCHER_GRACE_SEC = 20.0   # A rank whose launcher died is gone after this long, stopped or not.


class TrainingStopped(Exception):
    """The run ended early on purpose; `exit_code` is what the process should exit with."""

    exit_code = 1


class TrainingInterrupted(TrainingStopped):
    """Stopped by a signal after writing a snapshot and checkpoint."""

    def __init__(self, message, signum=None):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum) if signum else 1


class TrainingDiverged(TrainingStopped):
    """Losses, gradients or weights stopped being finite."""


def signal_name(signum):
    try:
        return signal.Signals(signum).name
    except (ValueError, TypeError):
        return 'a stop request'


class StopSignals:
    """The run's SIGTERM/SIGINT handlers (installed only in the main thread, where Python
    delivers signals); `signum` is the first one received, or None."""

    def __init__(self, announce=True):
        self.signum = None
        self.first_at = None
        self.announce = announce
        self._previous = {}

    def install(self, handler=None):
        """Take over SIGTERM/SIGINT (with `handler` instead of the stop request, if given)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, handler or self._handle)
        return self

    def restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, _frame):
        now = time.monotonic()
        if self.signum is None:
            self.signum, self.first_at = signum, now
            if self.announce:
                print('\n{} received: stopping after this minibatch with a snapshot and checkpoint '
                      '(send it again to stop at once).'.format(signal_name(signum)), flush=True)
            return
        if now - self.first_at < REPEAT_GRACE_SEC:
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


class StopAgreement:
    """Whether all ranks stop after this minibatch (see the module docstring)."""

    def __init__(self, distributed):
        self.group = torch.distributed.new_group(backend='gloo') if distributed else None
        self.sent = None
        self.work = None

    def poll(self, wanted):
        """Called by every rank once per minibatch; True on all ranks at the same minibatch,
        one minibatch after the first rank wanted to stop (at once with one process)."""
        if self.group is None:
            return bool(wanted)
        agreed = False
        if self.work is not None:
            self.work.wait()
            agreed = bool(self.sent.item())
        self.sent = torch.tensor([1 if wanted else 0], dtype=torch.int32)
        self.work = torch.distributed.all_reduce(self.sent, op=torch.distributed.ReduceOp.MAX, group=self.group,
                                                 async_op=True)
        return agreed

    def close(self):
        if self.work is not None:
            self.work.wait()
            self.work = None


def watch_launcher(grace_sec=LAUNCHER_GRACE_SEC, interval_sec=0.5):
    """In a rank spawned by train.py: when the launching process dies (the rank is handed to
    another parent), send this process SIGTERM, and end it after `grace_sec` regardless."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval_sec)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_sec)
        os._exit(1)

    threading.Thread(target=watch, name='launcher-watch', daemon=True).start()


def _total_norm(tensors):
    """One device scalar that is non-finite exactly when some element of `tensors` is (or its
    norm overflows float32, which counts as divergence too)."""
    if hasattr(torch, '_foreach_norm'):
        norms = torch._foreach_norm(tensors)
    else:
        norms = [t.norm() for t in tensors]
    return torch.stack([n.float() for n in norms]).sum()


class DivergenceGuard:
    """Counts non-finite gradient steps per phase on the device; `problems()` at a tick end."""

    def __init__(self, phase_names, device, say=print):
        self.say = say
        self.bad = {name: torch.zeros([], dtype=torch.int64, device=device) for name in phase_names}
        self.steps = dict.fromkeys(phase_names, 0)

    def note_gradients(self, phase_name, grads):
        if grads:
            self.bad[phase_name] += (~torch.isfinite(_total_norm(grads))).to(torch.int64)
        self.steps[phase_name] += 1

    def problems(self, stats, networks):
        """What went non-finite this tick, as lines (empty: all is well); resets the counts.
        `stats` is the tick's {name: {num, mean, std}}; `networks` maps names to modules."""
        names = list(self.bad)
        bad = torch.stack([self.bad[n] for n in names]).cpu().tolist() if names else []
        found = []
        for name, count in zip(names, bad):
            steps = self.steps[name]
            if steps and count == steps:
                found.append('phase {}: all {} steps had non-finite gradients'.format(name, steps))
            elif count:
                self.say('Warning: phase {}: {} of {} steps had non-finite gradients (zeroed)'.format(
                    name, count, steps))
        for name, value in sorted(stats.items()):
            if name.startswith('Loss/') and value['num'] > 0 and not _finite(value['mean']):
                found.append('loss statistic {} is {}'.format(name, value['mean']))
        for key, net in networks.items():
            tensors = [t.detach() for t in list(net.parameters()) + list(net.buffers()) if t.is_floating_point()]
            if tensors and not torch.isfinite(_total_norm(tensors)).item():
                found.append('{} has non-finite weights'.format(key))
        for name in names:
            self.bad[name].zero_()
            self.steps[name] = 0
        return found


def _finite(value):
    try:
        return value == value and abs(value) != float('inf')
    except TypeError:
        return False


# A launcher of several ranks (train.py --gpus=N).

class ForwardSignals:
    """In the launcher, while its ranks run: pass each SIGTERM/SIGINT on to them (a scheduler
    may signal the launcher alone), so that they stop as one."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.signals = StopSignals(announce=False)

    def __enter__(self):
        self.signals.install(self._forward)
        return self

    def __exit__(self, *exc):
        self.signals.restore()

    def _forward(self, signum, _frame):
        for pid in self.pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


_NOTE = 'stopped.json'


def leave_note(folder, err):
    """Rank 0 of spawned ranks: tell the launcher why the run stopped (it exits with it)."""
    import json
    with open(os.path.join(folder, _NOTE), 'w', encoding='utf-8') as f:
        json.dump(dict(message=str(err), exit_code=err.exit_code), f)


def read_note(folder):
    """The TrainingStopped a rank left in `folder`, or None."""
    import json
    try:
        with open(os.path.join(folder, _NOTE), encoding='utf-8') as f:
            note = json.load(f)
    except (OSError, ValueError):
        return None
    err = TrainingStopped(note['message'])
    err.exit_code = int(note['exit_code'])
    return err
