"""Training one (method, seed) with train.py in a child process: start, watch, keep snapshots,
stop at the budget, resume from the newest checkpoint; and the runner's own state file.
"""
import contextlib
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time

from bench.comparison.common import CKPT_WAIT_SECONDS, CompareError, POLL_SECONDS, ROOT, RunFailed, STATE_VERSION, STOP_GRACE_SECONDS, TRAIN_PY, UNLIMITED_KIMG, say, write_json_atomic, write_text_atomic
from bench.comparison.grid import safe_name
from bench.comparison.snapshots import collect, final_index, history, latest_checkpoint, list_segments


class State:
    def __init__(self, path):
        self.path = path
        self.data = dict(version=STATE_VERSION, runs={})
        if os.path.isfile(path):
            with open(path, encoding='utf-8') as f:
                self.data = json.load(f)
            if self.data.get('version') != STATE_VERSION:
                raise CompareError('{} was written by another version of the runner; use a new --outdir'
                                   .format(path))

    @property
    def runs(self):
        return self.data['runs']

    def save(self):
        write_json_atomic(self.path, self.data)


@contextlib.contextmanager
def outdir_lock(outdir):
    import fcntl
    with open(os.path.join(outdir, '.lock'), 'w', encoding='utf-8') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CompareError('another compare.py is working in {}; wait for it or use another --outdir'
                               .format(outdir))
        yield


def train_command(cfg, method, seed, resume=None):
    """The train.py command line of one run (the runner's flags first, then the method's, then --extra)."""
    kimg = cfg.kimg if cfg.kimg is not None else UNLIMITED_KIMG
    cmd = [sys.executable, TRAIN_PY, '--outdir=' + cfg.run_dir(method, seed, 'train'), '--data=' + cfg.data,
           '--seed={}'.format(seed), '--kimg={:g}'.format(kimg), '--snap={}'.format(cfg.snap), '--metrics=none']
    if cfg.tick is not None:
        cmd.append('--tick={:g}'.format(cfg.tick))
    if cfg.device != 'auto':
        cmd.append('--device=' + cfg.device)
    cmd += cfg.methods[method] + cfg.extra
    if resume is not None:
        cmd.append('--resume=' + resume)
    return cmd


OUTDIR_MARK = '<outdir>'     # how a run's spec writes the comparison's outdir (comparable across outdirs)


def run_spec(cfg, method, seed):
    """What decides a run's training: a re-run with the same outdir must match it."""
    cmd = train_command(cfg, method, seed)
    return dict(train_args=[a.replace(cfg.outdir, OUTDIR_MARK) for a in cmd[2:]], kimg=cfg.kimg,
                minutes=cfg.minutes)


def _child_env(cfg=None):
    """train.py's environment: unbuffered, and --detector-dir searched first (as $KDGAN_DETECTOR_DIR), so
    the runs find the files the preflight found. With --jobs=N > 1, each of the N children gets its share of
    the cores as its thread count (small networks gain more from one process per core than from threads);
    an OMP_NUM_THREADS the user set wins."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    folders = getattr(cfg, 'detector_dir', None)
    if folders:
        env['KDGAN_DETECTOR_DIR'] = os.pathsep.join(p for p in (folders, env.get('KDGAN_DETECTOR_DIR')) if p)
    jobs = getattr(cfg, 'jobs', 1) or 1
    if jobs > 1 and 'OMP_NUM_THREADS' not in os.environ:
        env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(child_threads(jobs))
    return env


def child_threads(jobs):
    """Threads per train.py child when `jobs` of them run at once: the usable cores shared out, at least one."""
    from training.training_loop import usable_cores
    return max(1, usable_cores() // jobs)


def dry_run(cfg, method):
    """train.py --dry-run with the method's flags: catches a bad name or flag before any training.
    Returns its output (the resolved training options)."""
    cmd = train_command(cfg, method, 0) + ['--dry-run']
    cmd[2] = '--outdir=' + os.path.join(cfg.outdir, 'runs', '.dry-run')
    res = subprocess.run(cmd, cwd=ROOT, env=_child_env(cfg), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, check=False)
    if res.returncode != 0:
        tail = '\n'.join(res.stdout.strip().splitlines()[-15:])
        raise CompareError('method {}: train.py refuses its flags ({}):\n{}'.format(
            method, ' '.join(shlex.quote(a) for a in cmd[2:]), tail))
    os.makedirs(os.path.join(cfg.outdir, 'methods'), exist_ok=True)
    write_text_atomic(os.path.join(cfg.outdir, 'methods', safe_name(method) + '.dry-run.txt'),
                      '$ ' + ' '.join(shlex.quote(a) for a in cmd[1:]) + '\n\n' + res.stdout)
    return res.stdout


def training_options(dry_run_text):
    """The 'Training options:' JSON that train.py --dry-run prints (what training_loop would get)."""
    head, sep, rest = dry_run_text.partition('Training options:')
    if not sep or '{' not in rest:
        raise CompareError('train.py --dry-run printed no training options; is it the harness\'s train.py?')
    return json.JSONDecoder().raw_decode(rest[rest.index('{'):])[0]


def check_method_files(cfg, method, dry_run_text):
    """Every file the method's loss needs (LPIPS VGG16, KD teacher), found as its train.py run will
    look for it (--detector-dir first); one clear CompareError naming the method when one is missing."""
    import click
    import train
    options = training_options(dry_run_text)
    try:
        return train.check_loss_assets(options.get('loss_kwargs'), detector_dir=cfg.detector_dir)
    except click.ClickException as err:
        raise CompareError('method {}: {} (compare.py passes train.py flags per method with --extra-for, e.g. '
                           "--extra-for='--cfg=fastgan:--recon=mse')".format(method, err.format_message()))


def _pump(stream, lines):
    for line in iter(stream.readline, ''):
        lines.put(line)
    lines.put(None)


def checkpoint_since(seg, timestamp):
    """True when `seg` holds a checkpoint written after `timestamp`. train.py writes a snapshot's
    checkpoint during its tick's maintenance, a moment *before* that tick's stats line: pass the
    timestamp of the tick before the snapshot's (0 for a session's first tick)."""
    for name in os.listdir(seg.path):
        if name.endswith('.ckpt.pt'):
            with contextlib.suppress(FileNotFoundError):
                if os.stat(os.path.join(seg.path, name)).st_mtime_ns / 1e9 >= timestamp - 0.002:
                    return True
    return False


def _child_signals():
    """In train.py's process, before exec: SIGINT back to its default. A runner started in the
    background (`cmd &`, nohup) inherits SIGINT ignored, and so would train.py, which then could not
    be stopped by `stop_process` and would run on, unwatched, after the runner ended."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_process(proc, grace=STOP_GRACE_SECONDS):
    """Interrupt train.py (SIGINT: Python's KeyboardInterrupt, its files are written atomically),
    then kill it if it does not end within `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


class _Watch:
    """One train.py child as the runner sees it: its output so far, its session folder, its stop."""

    def __init__(self, proc, train_dir, known, segments, label):
        self.proc, self.train_dir, self.known, self.segments, self.label = proc, train_dir, known, segments, label
        self.lines = queue.Queue()
        self.pump = threading.Thread(target=_pump, args=(proc.stdout, self.lines), daemon=True)
        self.pump.start()
        self.tail = []
        self.current = None          # the session folder this child writes, once it exists
        self.eof = False
        self.exited_at = None
        self.stop_at = None          # (stats time of the tick before the final snapshot's, deadline for its checkpoint)
        self.stopped_by_us = False

    def drain(self, logf, exited):
        """Copy the child's new output to the log; echo the lines a user wants to see."""
        while True:
            try:
                line = self.lines.get(timeout=(1.0 if exited and not self.eof else 0))
            except queue.Empty:
                break
            if line is None:
                self.eof = True
                break
            logf.write(line)
            self.tail = (self.tail + [line.rstrip('\n')])[-40:]
            if line.startswith('tick ') or line.startswith('Resuming') or 'Error' in line:
                say('  [{}] {}'.format(self.label, line.rstrip()))
        logf.flush()

    def find_session(self):
        if self.current is None:
            fresh = [s for s in list_segments(self.train_dir) if s.id not in self.known]
            if fresh:
                self.current = fresh[0]
                self.segments.append(fresh[0])
        return self.current

    def keep_and_maybe_stop(self, cfg, snap_dir, exited):
        """Keep new snapshots; once the budget's snapshot has its checkpoint (or waited too long), stop
        the child and say so."""
        for tick in collect(self.current, snap_dir, cfg.snap):
            say('  [{}] snapshot: tick {} kimg {:.3f}, {:.1f} s of training'.format(
                self.label, tick.tick, tick.kimg, tick.seconds))
        snaps = history(self.segments)
        final = final_index(snaps, cfg.kimg, cfg.minutes)
        if final is not None and not exited and self.stop_at is None:
            earlier = [t.timestamp for t in self.current.ticks if t.tick < snaps[final]['tick']]
            self.stop_at = (max(earlier, default=0.0), time.time() + CKPT_WAIT_SECONDS)
        if self.stop_at is not None and not exited and (checkpoint_since(self.current, self.stop_at[0])
                                                        or time.time() > self.stop_at[1]):
            self.stopped_by_us = True
            stop_process(self.proc)
            return True
        return False

    def follow(self, cfg, snap_dir, logf, stop=None):
        """Poll until the child has exited and its output is read (or 10 s after it exited). `stop`: an
        event another thread sets to end the comparison (signals reach only the main thread)."""
        try:
            while True:
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt('stopped with the comparison')
                exited = self.proc.poll() is not None
                if exited and self.exited_at is None:
                    self.exited_at = time.time()
                self.drain(logf, exited)
                if self.find_session() is not None and self.keep_and_maybe_stop(cfg, snap_dir, exited):
                    exited, self.exited_at = True, time.time()
                if exited and (self.eof or time.time() - self.exited_at > 10):
                    break
                time.sleep(POLL_SECONDS)
        finally:
            stop_process(self.proc, grace=10)
            self.pump.join(timeout=5)


def _start_child(cfg, method, seed, resume, logf, label):
    cmd = train_command(cfg, method, seed, resume=resume)
    logf.write('\n$ {}\n'.format(' '.join(shlex.quote(a) for a in cmd)))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_child_env(cfg),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            preexec_fn=_child_signals if os.name == 'posix' else None)
    say('[compare] {}: training {} (train.py pid {})'.format(
        label, 'from scratch' if resume is None else 'resumed from ' + os.path.relpath(resume, cfg.outdir),
        proc.pid))
    return proc


def train_run(cfg, method, seed, label, log, stop=None):
    """Train (or continue) one run until its budget; returns its snapshot list and final index.
    `stop` (a threading.Event) set: the child is stopped and KeyboardInterrupt raised, as on Ctrl-C."""
    train_dir = cfg.run_dir(method, seed, 'train')
    snap_dir = cfg.run_dir(method, seed, 'snapshots')
    os.makedirs(train_dir, exist_ok=True)
    os.makedirs(snap_dir, exist_ok=True)
    segments = list_segments(train_dir)
    for seg in segments:    # sessions of an interrupted invocation: keep what is still there
        collect(seg, snap_dir, cfg.snap)
    snaps = history(segments)
    final = final_index(snaps, cfg.kimg, cfg.minutes)
    if final is not None:
        return snaps, final, segments

    with open(log, 'a', encoding='utf-8') as logf:
        proc = _start_child(cfg, method, seed, latest_checkpoint(segments), logf, label)
        watch = _Watch(proc, train_dir, {seg.id for seg in segments}, segments, label)
        watch.follow(cfg, snap_dir, logf, stop)
    if watch.find_session() is not None:
        collect(watch.current, snap_dir, cfg.snap)
        for tick in watch.current.lost_ticks:
            say('  [{}] warning: the snapshot of tick {} was overwritten before it could be kept (snapshot '
                'names are whole kimg; use --tick/--snap giving at least 1 kimg between snapshots)'.format(
                    label, tick))
    snaps = history(segments)
    final = final_index(snaps, cfg.kimg, cfg.minutes)
    if final is None:
        raise RunFailed('train.py exited with code {} before the budget{}; last lines:\n{}'.format(
            proc.returncode, '' if not watch.stopped_by_us else ' (stopped by the runner)',
            '\n'.join(watch.tail[-15:])))
    return snaps, final, segments
