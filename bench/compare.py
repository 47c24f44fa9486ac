"""Side-by-side comparison: train every (method, seed) with train.py, evaluate every snapshot
with one metric, and write a table and curves.

    python bench/compare.py --outdir=cmp --data=~/datasets/obama.zip \\
        --methods=stylegan2+ada,stylegan2+diffaug,fastgan+diffaug --seeds=0,1,2 \\
        --kimg=400 --tick=4 --snap=5 --metric=fid5k_full

    # A method not in the table: NAME=FLAGS (flags split like a shell would).
    python bench/compare.py ... --methods='stylegan2+ada,ada-p02=--cfg=auto --aug=fixed --p=0.2'

    # A wall-clock budget per run (training time, summed over resumed sessions).
    python bench/compare.py ... --minutes=30 --tick=1 --snap=2

    # Per-backbone sizes and the KD teacher: flags for the methods that carry a selector flag.
    python bench/compare.py ... --extra-for='--cfg=fastgan:--ngf=32 --ndf=32' \\
        --extra-for='--cfg=auto:--cbase=8192 --cmax=256' \\
        --extra-for='--loss=kdgan.KDDLGAN:--teacher=ViT-B-32:openai'

    # The Fashion-MNIST few-shot reproduction, everything prepared (data, evaluator, teacher):
    python bench/compare.py --outdir=runs/fmnist-cpu --budget=cpu      # or --budget=gpu

Methods are data (`bench/compare_methods.py`: name -> train.py flags). Every
run gets the same `--data`, budget, `--tick/--snap` and `--extra` flags, and
the `--extra-for` flags of the selectors it carries. A `--budget` preset
(compare_methods.BUDGETS) supplies every option the command line leaves out,
after running its prepare step. `--skip-start` leaves the untrained tick-0
snapshot unevaluated (kept on disk).

Output, in `--outdir`:

    results.json                 per run: snapshots (tick, kimg, training seconds, metric value),
                                 best and final; per method: mean and std over seeds
    results.md                   the table (mean ± std over seeds of the best and the final value)
    <metric>_vs_kimg.png         metric against kimg, one colour per method: the mean over seeds
    <metric>_vs_time.png         and against training wall-clock seconds (thin lines: single seeds,
                                 band: ± one std where there are several seeds)
    samples.png                  one row per method: the final snapshot of its first seed, the same
                                 latents in every row
    runs/<method>-seed<S>/train/       train.py's run folder(s): one per training session
    runs/<method>-seed<S>/snapshots/   every snapshot, kept under a unique name, and
                                       metric-<name>.jsonl (the harness's report format)
    runs/<method>-seed<S>/train.log    train.py's full console output
    state.json                   what is done (written atomically after every step)

Snapshots: train.py names a snapshot by whole kimg, so with ticks shorter than
a kimg several snapshots share a file name and overwrite each other. The runner
watches each run while it trains and keeps every snapshot by hard link under
`snapshot-seg<K>-tick<T>.pkl`; a snapshot is matched to its tick by time (its
file is written between the stats.jsonl lines of the previous tick and of its
own), so kimg and training seconds come from train.py's own stats.jsonl.

Budget: `--kimg` is passed to train.py; `--minutes` stops a run at the first
snapshot whose `Timing/total_sec` reaches the budget (train.py is interrupted
once that snapshot's checkpoint is written; choose --snap so that snapshots
come often enough). With both, whichever comes first. The run's "final"
snapshot is that one; a --minutes run gets train.py --kimg=1000000.

Resuming: interrupted (Ctrl-C, SIGTERM, a crash, a lost machine) and run again
with the same --outdir and the same settings, the runner skips finished runs
without touching them, evaluates only snapshots not yet evaluated, and
continues an unfinished run exactly from its newest checkpoint
(`train.py --resume=<...>.ckpt.pt`, a new session folder beside the first);
a run that never wrote a checkpoint starts over. Changing the training
settings of an existing --outdir is refused; changing --metric only evaluates
the kept snapshots with the new metric.

The metric is any name `metrics.metric_main` knows (fid5k_full, kid1k_full,
fid64_full, ...), computed in-process exactly as calc_metrics.py does (same
seeding), with detectors from --detector-dir / $KDGAN_DETECTOR_DIR / the
cache. `--detector=FILE` evaluates FID/KID/IS in the feature space of another
network with NVIDIA's detector call signature (e.g. the Fashion-MNIST
evaluator, bench/fmnist/evaluator.py); `--metric-module=MOD` imports a module
that registers further metrics with `metric_main.register_metric`.
"""
import contextlib
import copy
import datetime
import io
import json
import math
import os
import platform
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, 'stylegan2_ada')
for _path in (ROOT, HARNESS):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench import compare_methods  # noqa: E402  pylint: disable=wrong-import-position

TRAIN_PY = os.path.join(HARNESS, 'train.py')
STATE_VERSION = 1
RESERVED_FLAGS = ('--outdir', '--seed', '--kimg', '--tick', '--snap', '--resume', '--metrics', '--dry-run', '-n')
UNLIMITED_KIMG = 1000000      # what train.py gets when only --minutes bounds a run
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 30
CKPT_WAIT_SECONDS = 300     # how long a --minutes stop waits for the final snapshot's checkpoint
INCEPTION_FILE = 'inception-2015-12-05.pt'
SEGMENT_RE = re.compile(r'^(\d+)-')
SNAPSHOT_RE = re.compile(r'^snapshot-seg(\d+)-tick(\d+)\.pkl$')


class CompareError(click.ClickException):
    """A problem the user can fix; shown as one message."""


class RunFailed(Exception):
    """train.py ended without reaching the budget."""

# Methods, seeds, flags.


_NAME_RE = r'[A-Za-z0-9][A-Za-z0-9_.+\-]*'


def parse_methods(values, table=None):
    """`--methods` values -> ordered {name: [train.py flags]}.

    Each value is a comma list of table names and `NAME=FLAGS` items. A piece
    that is neither a table name nor `NAME=...` continues the previous custom
    item's flags, so a flag value may itself contain commas.
    """
    table = compare_methods.METHODS if table is None else table
    items = []  # [name, flags text or None]
    for value in values:
        for piece in value.split(','):
            text = piece.strip()
            custom = re.match(r'^(' + _NAME_RE + r')=(.*)$', text, re.S)
            if text in table:
                items.append([text, None])
            elif custom and not text.startswith('-'):
                items.append([custom.group(1), custom.group(2)])
            elif items and items[-1][1] is not None:
                items[-1][1] += ',' + piece
            elif text:
                raise CompareError('--methods: unknown method {!r}; known: {} (or give NAME=FLAGS)'.format(
                    text, ', '.join(table)))
    if not items:
        raise CompareError('--methods: give at least one method, e.g. --methods=stylegan2+ada,stylegan2+diffaug')
    methods = {}
    for name, flags in items:
        if name in methods:
            raise CompareError('--methods: {} is named twice'.format(name))
        if flags is None:
            methods[name] = list(table[name])
        else:
            if name in table:
                raise CompareError('--methods: {} is already a table method ({}); give the custom one another '
                                   'name'.format(name, ' '.join(table[name])))
            try:
                methods[name] = shlex.split(flags)
            except ValueError as err:
                raise CompareError('--methods: cannot split the flags of {}: {}'.format(name, err))
    for name, flags in methods.items():
        check_flags(flags, 'method {}'.format(name))
    return methods


def parse_extra_for(items):
    """`--extra-for` values ('SELECTOR:FLAGS') or a preset's {selector: [flags]} -> ordered {selector: [flags]}.

    A method gets FLAGS when SELECTOR is one of its own flags (e.g. '--cfg=fastgan',
    '--loss=kdgan.KDDLGAN'): size flags differ by backbone (train.py refuses --ngf with a
    StyleGAN2 cfg and --cbase with FastGAN), teacher files only go with a KD loss.
    """
    if isinstance(items, dict):
        pairs = [(k, list(v) if not isinstance(v, str) else shlex.split(v)) for k, v in items.items()]
    else:
        pairs = []
        for item in items or []:
            selector, sep, flags = str(item).partition(':')
            if not sep or not selector.startswith('-'):
                raise CompareError("--extra-for: expected SELECTOR:FLAGS with SELECTOR a train.py flag, e.g. "
                                   "'--cfg=fastgan:--ngf=16 --ndf=16'; got {!r}".format(item))
            pairs.append((selector.strip(), shlex.split(flags)))
    out = {}
    for selector, flags in pairs:
        check_flags(flags, '--extra-for {}'.format(selector))
        out.setdefault(selector, []).extend(flags)
    return out


def apply_extra_for(methods, extra_for):
    """Each method's flags plus the flags of every selector it carries (in --extra-for order)."""
    out = {}
    for name, flags in methods.items():
        added = [f for selector, more in extra_for.items() if selector in flags for f in more]
        out[name] = list(flags) + added
    return out


def check_flags(flags, where):
    for flag in flags:
        head = flag.split('=', 1)[0]
        if head in RESERVED_FLAGS:
            raise CompareError('{}: {} is set by the runner (its own --kimg/--minutes/--tick/--snap/--seeds '
                               'options, and --resume when continuing); remove it'.format(where, head))


def parse_seeds(text):
    """'0,1,2' or '0-2' or '0,5-6' -> [0, 1, 2] ..."""
    seeds = []
    parts = [str(t) for t in text] if isinstance(text, (list, tuple)) else str(text).split(',')
    for part in parts:
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r'(\d+)-(\d+)', part)
        try:
            new = list(range(int(m.group(1)), int(m.group(2)) + 1)) if m else [int(part)]
        except ValueError:
            raise CompareError('--seeds: {!r} is not a number or a range a-b'.format(part))
        for seed in new:
            if seed not in seeds:
                seeds.append(seed)
    if not seeds:
        raise CompareError('--seeds: give at least one seed, e.g. --seeds=0,1,2')
    return seeds


def safe_name(name):
    return re.sub(r'[^A-Za-z0-9_.+=\-]', '_', name)


def run_key(method, seed):
    return '{}@seed{}'.format(method, seed)

# Reading a training session: stats.jsonl lines and the snapshots they belong to.


class Tick:
    __slots__ = ('tick', 'kimg', 'seconds', 'timestamp')

    def __init__(self, tick, kimg, seconds, timestamp):
        self.tick, self.kimg, self.seconds, self.timestamp = tick, kimg, seconds, timestamp


def _stat(entry, key):
    value = entry.get(key)
    if isinstance(value, dict):
        value = value.get('mean')
    return None if value is None else float(value)


class Segment:
    """One train.py session folder (`<id>-<desc>`) of a run, read incrementally."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.id = int(SEGMENT_RE.match(self.name).group(1))
        self.ticks = []
        self.snapshot_ticks = {}   # tick -> kept snapshot path
        self.lost_ticks = []       # snapshot ticks whose file was overwritten before it could be kept
        self._offset = 0
        self._partial = b''

    def read(self):
        """New complete stats.jsonl lines as Ticks (a half-written last line waits for the next call)."""
        try:
            with open(os.path.join(self.path, 'stats.jsonl'), 'rb') as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b'\n')
        self._partial = lines.pop()
        new = []
        for line in lines:
            try:
                entry = json.loads(line)
                tick = Tick(int(round(_stat(entry, 'Progress/tick'))), _stat(entry, 'Progress/kimg'),
                            _stat(entry, 'Timing/total_sec'), float(entry['timestamp']))
            except (ValueError, TypeError, KeyError):
                continue
            new.append(tick)
        self.ticks.extend(new)
        return new


def list_segments(train_dir):
    if not os.path.isdir(train_dir):
        return []
    names = [n for n in os.listdir(train_dir) if SEGMENT_RE.match(n) and os.path.isdir(os.path.join(train_dir, n))]
    return [Segment(os.path.join(train_dir, n)) for n in sorted(names, key=lambda n: int(SEGMENT_RE.match(n).group(1)))]


def _snapshot_file_for(seg, tick, lower):
    """The network-snapshot-*.pkl train.py wrote at `tick`, if it is still there: the file whose
    mtime lies after the previous stats line and not after this tick's line. Returns (path, stat)."""
    nimg = int(round(tick.kimg * 1000))
    whole = nimg // 1000
    for kimg in (whole, whole - 1, whole + 1):   # stats hold kimg as float32
        if kimg < 0:
            continue
        path = os.path.join(seg.path, 'network-snapshot-{:06d}.pkl'.format(kimg))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        mtime = st.st_mtime_ns / 1e9
        if lower < mtime <= tick.timestamp + 0.002:
            return path, st
    return None, None


def keep_snapshot(src, st, dst):
    """Hard-link (or copy) `src` to `dst`; True when `dst` holds the very file `st` describes."""
    tmp = dst + '.tmp'
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    try:
        os.link(src, tmp)
        ok = os.stat(tmp).st_ino == st.st_ino
    except FileNotFoundError:
        return False
    except OSError:   # no hard links on this file system
        import shutil
        try:
            shutil.copy2(src, tmp)
        except FileNotFoundError:
            return False
        ok = os.stat(src).st_mtime_ns == st.st_mtime_ns and os.stat(tmp).st_size == st.st_size
    if not ok:
        os.remove(tmp)
        return False
    os.replace(tmp, dst)
    return True


def collect(seg, snap_dir, snap_ticks):
    """Read new ticks of `seg` and keep their snapshots in `snap_dir`. Returns the new ticks that
    have a kept snapshot. `snap_ticks` (train.py's --snap) tells which ticks should have one."""
    found = []
    previous = seg.ticks[-1].timestamp if seg.ticks else 0.0
    for tick in seg.read():
        dst = os.path.join(snap_dir, 'snapshot-seg{:05d}-tick{:06d}.pkl'.format(seg.id, tick.tick))
        if os.path.isfile(dst):
            seg.snapshot_ticks[tick.tick] = dst
            found.append(tick)
        else:
            src, st = _snapshot_file_for(seg, tick, previous)
            if src is not None and keep_snapshot(src, st, dst):
                seg.snapshot_ticks[tick.tick] = dst
                found.append(tick)
            elif snap_ticks and tick.tick % snap_ticks == 0:
                seg.lost_ticks.append(tick.tick)
        previous = tick.timestamp
    return found


def history(segments):
    """The run's snapshots in tick order, over all sessions: a later session (resumed from a
    checkpoint) supersedes what earlier ones recorded from its first tick on.
    Returns a list of dicts (name, segment, tick, kimg, seconds)."""
    entries = {}
    for seg in segments:
        if not seg.ticks:
            continue
        first = seg.ticks[0].tick
        for tick in [t for t in entries if t >= first]:
            del entries[tick]
        for tick in seg.ticks:
            entries[tick.tick] = (seg, tick)
    snaps = []
    for number in sorted(entries):
        seg, tick = entries[number]
        path = seg.snapshot_ticks.get(number)
        if path is not None:
            snaps.append(dict(name=os.path.basename(path), segment=seg.name, tick=tick.tick,
                              kimg=round(tick.kimg, 6), seconds=round(tick.seconds, 3)))
    return snaps


def budget_reached(snap, kimg, minutes):
    if kimg is not None and snap['kimg'] * 1000 >= kimg * 1000 - 0.5 - 1e-7 * kimg * 1000:
        return True
    return minutes is not None and snap['seconds'] >= minutes * 60


def final_index(snaps, kimg, minutes):
    for i, snap in enumerate(snaps):
        if budget_reached(snap, kimg, minutes):
            return i
    return None


def latest_checkpoint(segments):
    """The newest exact-resume checkpoint of a run: in the newest session that has one, the highest kimg."""
    for seg in reversed(segments):
        best = None
        for name in os.listdir(seg.path):
            m = re.fullmatch(r'network-snapshot-(\d+)\.ckpt\.pt', name)
            if m and (best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), os.path.join(seg.path, name))
        if best is not None:
            return best[1]
    return None

# State, written atomically.


def write_json_atomic(path, data):
    tmp = '{}.tmp{}'.format(path, os.getpid())
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=2)
        f.write('\n')
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path, text):
    tmp = '{}.tmp{}'.format(path, os.getpid())
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, path)


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

# Training.


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


def run_spec(cfg, method, seed):
    """What decides a run's training: a re-run with the same outdir must match it."""
    cmd = train_command(cfg, method, seed)
    return dict(train_args=[a.replace(cfg.outdir, '<outdir>') for a in cmd[2:]], kimg=cfg.kimg,
                minutes=cfg.minutes)


def _child_env():
    return dict(os.environ, PYTHONUNBUFFERED='1')


def dry_run(cfg, method):
    """train.py --dry-run with the method's flags: catches a bad name or flag before any training."""
    cmd = train_command(cfg, method, 0) + ['--dry-run']
    cmd[2] = '--outdir=' + os.path.join(cfg.outdir, 'runs', '.dry-run')
    res = subprocess.run(cmd, cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, check=False)
    if res.returncode != 0:
        tail = '\n'.join(res.stdout.strip().splitlines()[-15:])
        raise CompareError('method {}: train.py refuses its flags ({}):\n{}'.format(
            method, ' '.join(shlex.quote(a) for a in cmd[2:]), tail))
    os.makedirs(os.path.join(cfg.outdir, 'methods'), exist_ok=True)
    write_text_atomic(os.path.join(cfg.outdir, 'methods', safe_name(method) + '.dry-run.txt'),
                      '$ ' + ' '.join(shlex.quote(a) for a in cmd[1:]) + '\n\n' + res.stdout)


def _pump(stream, lines):
    for line in iter(stream.readline, ''):
        lines.put(line)
    lines.put(None)


def checkpoint_since(seg, timestamp):
    """True when `seg` holds a checkpoint written after `timestamp` (train.py writes it after the
    stats line of its snapshot's tick)."""
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


def train_run(cfg, method, seed, label, log):
    """Train (or continue) one run until its budget; returns its snapshot list and final index."""
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

    resume = latest_checkpoint(segments)
    cmd = train_command(cfg, method, seed, resume=resume)
    known = {seg.id for seg in segments}
    with open(log, 'a', encoding='utf-8') as logf:
        logf.write('\n$ {}\n'.format(' '.join(shlex.quote(a) for a in cmd)))
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_child_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                preexec_fn=_child_signals if os.name == 'posix' else None)
        say('[compare] {}: training {} (train.py pid {})'.format(
            label, 'from scratch' if resume is None else 'resumed from ' + os.path.relpath(resume, cfg.outdir),
            proc.pid))
        lines = queue.Queue()
        pump = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        pump.start()
        tail = []
        stopped_by_us = False
        current = None
        eof = False
        exited_at = None
        stop_at = None
        try:
            while True:
                exited = proc.poll() is not None
                if exited and exited_at is None:
                    exited_at = time.time()
                while True:
                    try:
                        line = lines.get(timeout=(1.0 if exited and not eof else 0))
                    except queue.Empty:
                        break
                    if line is None:
                        eof = True
                        break
                    logf.write(line)
                    tail = (tail + [line.rstrip('\n')])[-40:]
                    if line.startswith('tick ') or line.startswith('Resuming') or 'Error' in line:
                        say('  [{}] {}'.format(label, line.rstrip()))
                logf.flush()
                if current is None:
                    fresh = [s for s in list_segments(train_dir) if s.id not in known]
                    if fresh:
                        current = fresh[0]
                        segments.append(current)
                if current is not None:
                    for tick in collect(current, snap_dir, cfg.snap):
                        say('  [{}] snapshot: tick {} kimg {:.3f}, {:.1f} s of training'.format(
                            label, tick.tick, tick.kimg, tick.seconds))
                    snaps = history(segments)
                    final = final_index(snaps, cfg.kimg, cfg.minutes)
                    if final is not None and not exited and stop_at is None:
                        # Let train.py finish the checkpoint of that snapshot first (a resumable end state).
                        stamp = next(t.timestamp for t in current.ticks if t.tick == snaps[final]['tick'])
                        stop_at = (stamp, time.time() + CKPT_WAIT_SECONDS)
                    if stop_at is not None and not exited and (checkpoint_since(current, stop_at[0])
                                                               or time.time() > stop_at[1]):
                        stopped_by_us = True
                        stop_process(proc)
                        exited, exited_at = True, time.time()
                if exited and (eof or time.time() - exited_at > 10):
                    break
                time.sleep(POLL_SECONDS)
        finally:
            stop_process(proc, grace=10)
            pump.join(timeout=5)
    if current is None:
        fresh = [s for s in list_segments(train_dir) if s.id not in known]
        if fresh:
            current = fresh[0]
            segments.append(current)
    if current is not None:
        collect(current, snap_dir, cfg.snap)
        for tick in current.lost_ticks:
            say('  [{}] warning: the snapshot of tick {} was overwritten before it could be kept (snapshot '
                'names are whole kimg; use --tick/--snap giving at least 1 kimg between snapshots)'.format(
                    label, tick))
    snaps = history(segments)
    final = final_index(snaps, cfg.kimg, cfg.minutes)
    if final is None:
        raise RunFailed('train.py exited with code {} before the budget{}; last lines:\n{}'.format(
            proc.returncode, '' if not stopped_by_us else ' (stopped by the runner)', '\n'.join(tail[-15:])))
    return snaps, final, segments

# Evaluation: metric_main in this process, seeded as calc_metrics.py seeds it.


class Evaluator:
    def __init__(self, cfg):
        import numpy as np
        import torch
        self.np, self.torch = np, torch
        self.cfg = cfg
        device = cfg.device
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.device = torch.device(device)
        self._dataset_kwargs = {}

    def dataset_kwargs(self, G, pkl_kwargs):
        key = (G.img_resolution, G.c_dim)
        if key not in self._dataset_kwargs:
            import calc_metrics
            with contextlib.redirect_stdout(io.StringIO()):
                self._dataset_kwargs[key] = calc_metrics._dataset_kwargs(
                    self.cfg.eval_data, None, pkl_kwargs, G)
        return copy.deepcopy(self._dataset_kwargs[key])

    def __call__(self, pkl):
        import legacy
        from metrics import metric_main, metric_utils
        with open(pkl, 'rb') as f:
            data = legacy.load_network_pkl(f)
        G = data['G_ema'] if data.get('G_ema') is not None else data['G']
        kwargs = self.dataset_kwargs(G, data.get('training_set_kwargs'))
        self.torch.manual_seed(0)
        self.np.random.seed(0)
        G = copy.deepcopy(G).eval().requires_grad_(False).to(self.device)
        result = metric_main.calc_metric(metric=self.cfg.metric, G=G, dataset_kwargs=kwargs, num_gpus=1, rank=0,
                                         device=self.device, progress=metric_utils.ProgressMonitor(verbose=False),
                                         detector_dir=self.cfg.detector_dir)
        with contextlib.redirect_stdout(io.StringIO()):
            metric_main.report_metric(result, run_dir=os.path.dirname(pkl), snapshot_pkl=pkl)
        return result


def evaluated(cfg, snaps):
    """The snapshots that get the metric: all, or all but the untrained tick-0 one with --skip-start."""
    return [s for s in snaps if not (cfg.skip_start and s['tick'] == 0)]


def primary_key(metric, results):
    """The result a snapshot is ranked by: the metric's own key, else the first one
    (FID for `fidkid*`: its results are {fid..., kid...})."""
    for key in (metric, metric + '_mean'):
        if key in results:
            return key
    return next(iter(results), None)


def primary_value(metric, results):
    return float(results[primary_key(metric, results)])


def higher_is_better(metric, better):
    if better != 'auto':
        return better == 'higher'
    return bool(re.match(r'^(is|pr)', metric))


def metric_identity(cfg):
    """What an evaluation depends on: metric, data compared against and detector files (by content)."""
    from metrics import detectors, metric_main
    try:
        metric_main.validate_metrics([cfg.metric], check_files=False)
        found = metric_main.check_detectors([cfg.metric], detector_dir=cfg.detector_dir)
    except ValueError as err:
        raise CompareError('--metric: {}'.format(err))
    except detectors.AssetUnavailableError as err:
        raise CompareError(str(err))
    files = {name: dict(path=path, md5=detectors.detector_fingerprint(path)) for name, path in found.items()}
    key = '{}|{}|{}'.format(cfg.metric, cfg.eval_data,
                            ','.join('{}={}'.format(k, v['md5'][:12]) for k, v in sorted(files.items())))
    return key, files


def stage_detector(outdir, detector, detector_dir):
    """--detector=FILE: a folder where FILE stands for the Inception detector, searched first."""
    path = os.path.abspath(os.path.expanduser(detector))
    if not os.path.isfile(path):
        raise CompareError('--detector: {} is not a file'.format(detector))
    folder = os.path.join(outdir, 'detector')
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, INCEPTION_FILE)
    if os.path.islink(link) or os.path.exists(link):
        if os.path.realpath(link) != os.path.realpath(path):
            os.remove(link)
    if not os.path.exists(link):
        try:
            os.symlink(path, link)
        except OSError:
            import shutil
            shutil.copy2(path, link)
    return folder + (os.pathsep + detector_dir if detector_dir else '')

# Summaries.


def mean_std(values):
    values = [float(v) for v in values]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def summarize(cfg, state, metric_key):
    """results.json's content from the state: per run and per method."""
    higher = higher_is_better(cfg.metric, cfg.better)
    pick = max if higher else min
    runs = []
    for method in cfg.methods:
        for seed in cfg.seeds:
            entry = state.runs.get(run_key(method, seed), {})
            evals = entry.get('evals', {}).get(metric_key, {})
            snaps = []
            for snap in evaluated(cfg, entry.get('snapshots', [])):
                ev = evals.get(snap['name'])
                snaps.append(dict(snap, value=None if ev is None else ev['value'],
                                  results=None if ev is None else ev['results'],
                                  eval_seconds=None if ev is None else ev['seconds']))
            done = entry.get('status') == 'finished' and snaps and all(s['value'] is not None for s in snaps)
            run = dict(method=method, seed=seed, status=entry.get('status', 'pending'),
                       run_dir=os.path.relpath(cfg.run_dir(method, seed), cfg.outdir),
                       sessions=entry.get('sessions', []), train_command=entry.get('train_command'),
                       snapshots=snaps, error=entry.get('error'))
            if done:
                best = pick(snaps, key=lambda s: s['value'])
                last = snaps[-1]
                for what, snap in (('best', best), ('final', last)):
                    run[what] = dict(value=snap['value'], tick=snap['tick'], kimg=snap['kimg'],
                                     seconds=snap['seconds'], results=snap['results'])
            runs.append(run)
    methods = {}
    for method in cfg.methods:
        done = [r for r in runs if r['method'] == method and 'final' in r]
        summary = dict(flags=cfg.methods[method], seeds=[r['seed'] for r in done], n=len(done))
        for what in ('best', 'final'):
            values = [r[what]['value'] for r in done]
            mean, std = mean_std(values)
            summary[what] = dict(mean=mean, std=std, values=values)
        # The metric's other results (KID beside FID for fidkid*), at the same best and final snapshots.
        summary['secondary'] = {}
        for key in secondary_keys(cfg.metric, done):
            summary['secondary'][key] = {what: dict(zip(('mean', 'std'), mean_std(
                [r[what]['results'][key] for r in done]))) for what in ('best', 'final')}
        summary['final_kimg'] = mean_std([r['final']['kimg'] for r in done])[0]
        summary['final_seconds'] = mean_std([r['final']['seconds'] for r in done])[0]
        summary['curve'] = mean_curve(done)
        methods[method] = summary
    return dict(higher_is_better=higher, runs=runs, methods=methods)


def secondary_keys(metric, runs):
    """Result keys every finished run has besides the ranked one."""
    keys = None
    for run in runs:
        for what in ('best', 'final'):
            results = run[what].get('results') or {}
            here = [k for k in results if k != primary_key(metric, results)]
            keys = here if keys is None else [k for k in keys if k in here]
    return keys or []


def mean_curve(runs):
    """Mean (and std) over seeds at the ticks every seed has a snapshot at."""
    if not runs:
        return []
    common = None
    for run in runs:
        ticks = {s['tick'] for s in run['snapshots']}
        common = ticks if common is None else common & ticks
    curve = []
    for tick in sorted(common):
        points = [next(s for s in run['snapshots'] if s['tick'] == tick) for run in runs]
        value, std = mean_std([p['value'] for p in points])
        curve.append(dict(tick=tick, kimg=mean_std([p['kimg'] for p in points])[0],
                          seconds=mean_std([p['seconds'] for p in points])[0], mean=value, std=std))
    return curve


def fmt(value):
    if value is None:
        return '–'
    return '{:.4g}'.format(value)


def fmt_mean_std(stats):
    if stats['mean'] is None:
        return '–'
    if stats['std'] is None:
        return fmt(stats['mean'])
    return '{} ± {}'.format(fmt(stats['mean']), fmt(stats['std']))


def machine_info():
    info = dict(host=platform.node(), platform=platform.platform(), python=platform.python_version(),
                cpu_count=os.cpu_count())
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    info['cpu'] = line.split(':', 1)[1].strip()
                    break
    import torch
    info['torch'] = torch.__version__
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def budget_text(cfg):
    parts = []
    if cfg.kimg is not None:
        parts.append('{:g} kimg'.format(cfg.kimg))
    if cfg.minutes is not None:
        parts.append('{:g} min of training'.format(cfg.minutes))
    text = ' or '.join(parts) + ' per run'
    text += ', tick {} kimg, a snapshot every {} tick(s)'.format('{:g}'.format(cfg.tick) if cfg.tick else 'default',
                                                                 cfg.snap)
    return text


def write_outputs(cfg, state, metric_key, detector_files, command):
    summary = summarize(cfg, state, metric_key)
    plots = draw_plots(cfg, summary)
    sample_rows = draw_samples(cfg, summary, os.path.join(cfg.outdir, SAMPLES_FILE))
    results = dict(
        created=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        command=command, machine=machine_info(),
        config=dict(data=cfg.data, eval_data=cfg.eval_data, metric=cfg.metric, metric_key=metric_key,
                    higher_is_better=summary['higher_is_better'], detectors=detector_files,
                    kimg=cfg.kimg, minutes=cfg.minutes, tick=cfg.tick, snap=cfg.snap, seeds=cfg.seeds,
                    extra=cfg.extra, device=cfg.device, budget=cfg.budget, methods=cfg.methods,
                    skip_start=cfg.skip_start),
        runs=summary['runs'], methods=summary['methods'], table='results.md', plots=plots,
        samples=dict(file=SAMPLES_FILE, rows=sample_rows) if sample_rows else None)
    write_json_atomic(os.path.join(cfg.outdir, 'results.json'), results)
    write_text_atomic(os.path.join(cfg.outdir, 'results.md'), markdown(cfg, results))
    return results


def markdown(cfg, results):
    ranked = [r['final']['results'] for r in results['runs'] if r.get('final') and r['final'].get('results')]
    metric = primary_key(cfg.metric, ranked[0]) if ranked else cfg.metric
    secondary = []
    for summary in results['methods'].values():
        secondary += [k for k in summary.get('secondary', {}) if k not in secondary]
    direction = 'higher is better' if results['config']['higher_is_better'] else 'lower is better'
    machine = results['machine']
    lines = ['# {} on {}'.format(cfg.metric, cfg.data), '',
             '- Date: {}; machine: {} ({}{})'.format(
                 results['created'], machine.get('host'), machine.get('cpu', machine.get('platform')),
                 ', ' + machine['gpu'] if machine.get('gpu') else ''),
             '- Budget: {}; seeds: {}'.format(budget_text(cfg), ', '.join(str(s) for s in cfg.seeds)),
             '- Metric: {} ({}), against {}; detector(s): {}'.format(
                 cfg.metric, direction, cfg.eval_data,
                 ', '.join('{} ({}, md5 {})'.format(k, os.path.basename(os.path.realpath(v['path'])), v['md5'][:12])
                           for k, v in results['config']['detectors'].items()) or 'none'),
             '- Extra train.py flags: {}'.format(' '.join(cfg.extra) or 'none'),
             '- Command: `{}`'.format(results['command']), '',
             '| Method | Seeds | Best {m} | Final {m} |{sec} Final kimg | Training time (s) |'.format(
                 m=metric, sec=''.join(' {} at best | Final {} |'.format(k, k) for k in secondary)),
             '|---|---|---|---|' + '---|---|' * len(secondary) + '---|---|']
    for method, summary in results['methods'].items():
        cells = [method, summary['n'], fmt_mean_std(summary['best']), fmt_mean_std(summary['final'])]
        for key in secondary:
            stats = summary['secondary'].get(key)
            cells += [fmt_mean_std(stats['best']), fmt_mean_std(stats['final'])] if stats else ['–', '–']
        cells += [fmt(summary['final_kimg']), fmt(summary['final_seconds'])]
        lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    lines += ['', 'Best: the best snapshot of each run by {}; final: its last snapshot (at the budget){}. Mean ± '
              'sample standard deviation over seeds (no ± with one seed). Training time: train.py\'s '
              'Timing/total_sec at the final snapshot, mean over seeds.'.format(
                  metric, '; ' + ', '.join(secondary) + ' are taken at those same snapshots' if secondary else ''),
              '']
    for plot in results['plots']:
        lines.append('![{}]({})'.format(plot['title'], plot['file']))
    if results.get('samples'):
        lines += ['', 'Samples of the final snapshot of each method\'s first seed (the same latents in every row):',
                  '', '![samples]({})'.format(results['samples']['file'])]
    lines += ['', '## Runs', '', '| Method | Seed | Status | Snapshots | Best (kimg) | Final (kimg) | Folder |',
              '|---|---|---|---|---|---|---|']
    for run in results['runs']:
        best = run.get('best')
        final = run.get('final')
        lines.append('| {} | {} | {} | {} | {} | {} | {} |'.format(
            run['method'], run['seed'], run['status'], len(run['snapshots']),
            '{} ({})'.format(fmt(best['value']), fmt(best['kimg'])) if best else '–',
            '{} ({})'.format(fmt(final['value']), fmt(final['kimg'])) if final else '–', run['run_dir']))
    lines += ['', 'Flags per method (train.py\'s resolved options: `methods/<name>.dry-run.txt`):', '']
    for method, flags in cfg.methods.items():
        lines.append('- `{}`: `{}`'.format(method, ' '.join(flags)))
    return '\n'.join(lines) + '\n'

# Plots, drawn with Pillow.


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def nice_ticks(lo, hi, count=6):
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    end = math.ceil(hi / step) * step
    ticks = []
    value = start
    while value <= end + step * 1e-6:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _font(size):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw, text, font):
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def draw_chart(path, series, xlabel, ylabel, title, size=(960, 600)):
    """A line chart: `series` = [dict(name, color, mean=[(x, y)], band=[(x, lo, hi)], seeds=[[(x, y)]])]."""
    from PIL import Image, ImageDraw
    font, small = _font(16), _font(13)
    probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    legend_w = max([_text_size(probe, s['name'], small)[0] for s in series] + [100])
    left, right, top, bottom = 90, legend_w + 70, 50, 70    # the legend column fits the longest name
    width, height = max(size[0], left + right + 500), size[1]
    img = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img, 'RGBA')
    xs, ys = [], []
    for s in series:
        for line in [s['mean']] + s['seeds']:
            xs += [p[0] for p in line]
            ys += [p[1] for p in line]
        for x, lo, hi in s['band']:
            xs.append(x)
            ys += [lo, hi]
    xs = [x for x in xs if x is not None and math.isfinite(x)] or [0.0, 1.0]
    ys = [y for y in ys if y is not None and math.isfinite(y)] or [0.0, 1.0]
    xt, yt = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = width - left - right, height - top - bottom

    def px(x, y):
        return left + (x - x0) / (x1 - x0) * pw, top + (1 - (y - y0) / (y1 - y0)) * ph

    for x in xt:
        X, _ = px(x, y0)
        draw.line([(X, top), (X, top + ph)], fill=(230, 230, 230), width=1)
        label = '{:g}'.format(x)
        tw, _ = _text_size(draw, label, small)
        draw.text((X - tw / 2, top + ph + 8), label, fill=(60, 60, 60), font=small)
    for y in yt:
        _, Y = px(x0, y)
        draw.line([(left, Y), (left + pw, Y)], fill=(230, 230, 230), width=1)
        label = '{:g}'.format(y)
        tw, th = _text_size(draw, label, small)
        draw.text((left - tw - 8, Y - th / 2 - 2), label, fill=(60, 60, 60), font=small)
    draw.rectangle([left, top, left + pw, top + ph], outline=(80, 80, 80), width=1)
    tw, _ = _text_size(draw, title, font)
    draw.text((left + (pw - tw) / 2, 15), title, fill=(0, 0, 0), font=font)
    tw, _ = _text_size(draw, xlabel, font)
    draw.text((left + (pw - tw) / 2, height - 35), xlabel, fill=(0, 0, 0), font=font)
    tw, th = _text_size(draw, ylabel, font)
    label_img = Image.new('RGBA', (tw + 4, th + 8), (255, 255, 255, 0))
    ImageDraw.Draw(label_img).text((2, 0), ylabel, fill=(0, 0, 0), font=font)
    label_img = label_img.rotate(90, expand=True)
    img.paste(label_img, (12, int(top + (ph - label_img.size[1]) / 2)), label_img)

    for s in series:
        color = s['color']
        if len(s['band']) >= 2:
            upper = [px(x, hi) for x, _, hi in s['band']]
            lower = [px(x, lo) for x, lo, _ in reversed(s['band'])]
            draw.polygon(upper + lower, fill=color + (45,))
        for line in s['seeds']:
            points = [px(x, y) for x, y in line]
            if len(points) >= 2:
                draw.line(points, fill=color + (110,), width=1)
        points = [px(x, y) for x, y in s['mean']]
        if len(points) >= 2:
            draw.line(points, fill=color + (255,), width=3, joint='curve')
        for X, Y in points:
            draw.ellipse([X - 4, Y - 4, X + 4, Y + 4], fill=color + (255,))
    ly = top + 5
    for s in series:
        lx = left + pw + 18
        draw.line([(lx, ly + 9), (lx + 28, ly + 9)], fill=s['color'] + (255,), width=3)
        draw.text((lx + 36, ly), s['name'], fill=(0, 0, 0), font=small)
        ly += 24
    img.save(path, format='PNG')


SAMPLES_FILE = 'samples.png'
SAMPLES_PER_METHOD = 12


def _image_row(G, count):
    """`count` images of G (uint8 HWC, RGB), z from seeds 0..count-1 as generate.py draws them;
    conditional networks cycle through the classes."""
    import numpy as np
    import torch
    images = []
    with torch.no_grad():
        for i in range(count):
            z = torch.from_numpy(np.random.RandomState(i).randn(1, G.z_dim)).to(torch.float32)
            c = torch.zeros([1, G.c_dim])
            if G.c_dim:
                c[0, i % G.c_dim] = 1
            img = G(z, c, noise_mode='const')
            img = (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
            images.append(np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[:, :, :3])
    return images


def draw_samples(cfg, summary, path, count=SAMPLES_PER_METHOD):
    """One row per method: images of the final snapshot of its first finished seed (G_ema), the same
    latents in every row, so the methods can be compared by eye. Returns the rows' descriptions."""
    import legacy
    from PIL import Image, ImageDraw
    rows = []
    for method in cfg.methods:
        run = next((r for r in summary['runs'] if r['method'] == method and 'final' in r), None)
        if run is None:
            continue
        snap = run['snapshots'][-1]
        pkl = os.path.join(cfg.run_dir(method, run['seed'], 'snapshots'), snap['name'])
        with open(pkl, 'rb') as f:
            data = legacy.load_network_pkl(f)
        G = data['G_ema'] if data.get('G_ema') is not None else data['G']
        G = copy.deepcopy(G).eval().requires_grad_(False).cpu()
        rows.append((dict(method=method, seed=run['seed'], kimg=snap['kimg'], snapshot=os.path.relpath(pkl, cfg.outdir)),
                     _image_row(G, count)))
    if not rows:
        return []
    res = max(img.shape[0] for _, images in rows for img in images)
    cell = max(64, min(res, 128))
    label_w, pad, font = 250, 4, _font(14)
    canvas = Image.new('RGB', (label_w + count * (cell + pad) + pad, len(rows) * (cell + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (info, images) in enumerate(rows):
        y = pad + r * (cell + pad)
        text = '{}\nseed {}, {:g} kimg'.format(info['method'], info['seed'], info['kimg'])
        draw.multiline_text((8, y + cell / 2 - 18), text, fill=(0, 0, 0), font=font, spacing=4)
        for i, img in enumerate(images):
            tile = Image.fromarray(img, 'RGB').resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (label_w + pad + i * (cell + pad), y))
    canvas.save(path, format='PNG')
    return [info for info, _ in rows]


def data_name(path):
    """A dataset's short name for titles: the file or folder name."""
    return os.path.basename(os.path.normpath(path)) if os.sep in str(path) else str(path)


def draw_plots(cfg, summary):
    plots = []
    runs_by_method = {}
    for run in summary['runs']:
        if 'final' in run:
            runs_by_method.setdefault(run['method'], []).append(run)
    for axis, xlabel, suffix in (('kimg', 'kimg', 'kimg'), ('seconds', 'training wall-clock (s)', 'time')):
        series = []
        for i, (method, summ) in enumerate(summary['methods'].items()):
            runs = runs_by_method.get(method, [])
            if not runs:
                continue
            curve = summ['curve']
            series.append(dict(
                name='{} (n={})'.format(method, len(runs)), color=PALETTE[i % len(PALETTE)],
                mean=[(c[axis], c['mean']) for c in curve],
                band=[(c[axis], c['mean'] - c['std'], c['mean'] + c['std']) for c in curve if c['std'] is not None],
                seeds=[[(s[axis], s['value']) for s in run['snapshots']] for run in runs] if len(runs) > 1 else []))
        if not series:
            continue
        name = '{}_vs_{}.png'.format(safe_name(cfg.metric), suffix)
        title = '{} vs {} on {} (mean over seeds)'.format(cfg.metric, xlabel.split(' (')[0], data_name(cfg.data))
        draw_chart(os.path.join(cfg.outdir, name), series, xlabel, cfg.metric, title)
        plots.append(dict(file=name, x=axis, title=title))
    return plots

# The comparison.


class Config:
    def __init__(self, **kwargs):
        self.skip_start = False
        self.__dict__.update(kwargs)

    def run_dir(self, method, seed, *sub):
        return os.path.join(self.outdir, 'runs', '{}-seed{}'.format(safe_name(method), seed), *sub)


def say(text):
    print(text, flush=True)


def _interrupt(signum, frame):
    del frame
    raise KeyboardInterrupt('signal {}'.format(signum))


def compare(cfg, command):
    os.makedirs(cfg.outdir, exist_ok=True)
    with outdir_lock(cfg.outdir):
        return _compare_locked(cfg, command)


def _compare_locked(cfg, command):
    state = State(os.path.join(cfg.outdir, 'state.json'))
    metric_key, detector_files = metric_identity(cfg)
    grid = [(m, s) for m in cfg.methods for s in cfg.seeds]

    # Settings must match what an existing outdir trained with.
    for method, seed in grid:
        entry = state.runs.get(run_key(method, seed))
        spec = run_spec(cfg, method, seed)
        if entry is not None and entry.get('spec') != spec:
            raise CompareError('{} already holds {} seed {} trained with other settings:\n  was: {}\n  now: {}\n'
                               'use another --outdir (or the same settings)'.format(
                                   cfg.outdir, method, seed, json.dumps(entry.get('spec')), json.dumps(spec)))
    todo = [(m, s) for m, s in grid if state.runs.get(run_key(m, s), {}).get('status') not in ('finished', 'trained')]
    for method in dict.fromkeys(m for m, _ in todo):
        say('[compare] checking the flags of {} (train.py --dry-run)'.format(method))
        dry_run(cfg, method)

    evaluator = None
    failures = []
    for number, (method, seed) in enumerate(grid, 1):
        key = run_key(method, seed)
        label = '{} seed {}'.format(method, seed)
        head = '[compare] run {}/{} {}'.format(number, len(grid), label)
        entry = state.runs.setdefault(key, dict(method=method, seed=seed, spec=run_spec(cfg, method, seed),
                                                status='pending', evals={}))
        evals = entry.setdefault('evals', {}).setdefault(metric_key, {})
        if entry['status'] == 'finished' and all(s['name'] in evals for s in evaluated(cfg, entry['snapshots'])):
            say('{}: finished earlier; skipped'.format(head))
            continue

        if entry['status'] not in ('trained', 'finished'):
            start = time.time()
            say('{}: start'.format(head))
            entry['status'] = 'training'
            entry.pop('error', None)
            state.save()
            try:
                snaps, final, segments = train_run(cfg, method, seed, label,
                                                   cfg.run_dir(method, seed, 'train.log'))
            except RunFailed as err:
                entry['status'] = 'failed'
                entry['error'] = str(err)
                state.save()
                say('{}: FAILED: {}'.format(head, err))
                failures.append(label)
                continue
            entry['snapshots'] = snaps[:final + 1]
            entry['sessions'] = [os.path.relpath(seg.path, cfg.outdir) for seg in segments if seg.ticks]
            entry['train_command'] = ' '.join(shlex.quote(a) for a in train_command(cfg, method, seed))
            entry['status'] = 'trained'
            state.save()
            final_snap = entry['snapshots'][-1]
            say('{}: trained to kimg {:.3f} in {:.1f} s of training ({} snapshots; {:.1f} s here)'.format(
                head, final_snap['kimg'], final_snap['seconds'], len(entry['snapshots']), time.time() - start))

        if evaluator is None:
            evaluator = Evaluator(cfg)
        snap_dir = cfg.run_dir(method, seed, 'snapshots')
        for snap in evaluated(cfg, entry['snapshots']):
            if snap['name'] in evals:
                continue
            result = evaluator(os.path.join(snap_dir, snap['name']))
            value = primary_value(cfg.metric, result.results)
            evals[snap['name']] = dict(value=value, results=dict(result.results), seconds=result.total_time)
            state.save()
            say('  [{}] {} at tick {} kimg {:.3f}: {:.6g} ({:.1f} s)'.format(
                label, cfg.metric, snap['tick'], snap['kimg'], value, result.total_time))
        entry['status'] = 'finished'
        state.save()
        results = write_outputs(cfg, state, metric_key, detector_files, command)
        run = next(r for r in results['runs'] if r['method'] == method and r['seed'] == seed)
        say('{}: done; best {} at kimg {:.3f}, final {}'.format(
            head, fmt(run['best']['value']), run['best']['kimg'], fmt(run['final']['value'])))

    results = write_outputs(cfg, state, metric_key, detector_files, command)
    say('[compare] wrote {}, {} and {}'.format(
        os.path.join(cfg.outdir, 'results.json'), os.path.join(cfg.outdir, 'results.md'),
        ', '.join(os.path.join(cfg.outdir, p['file']) for p in results['plots']) or 'no plots'))
    if failures:
        raise CompareError('{} run(s) failed: {}; see their train.log; re-run the same command to retry'.format(
            len(failures), ', '.join(failures)))
    return results

# Command line.


def _substitute(value, values):
    """`{name}` -> values[name] in the strings of a preset value (lists and dicts walked); other braces stay
    (a flag such as --kd-template='A photo of a {label}' passes through)."""
    if isinstance(value, str):
        for name, text in values.items():
            value = value.replace('{' + name + '}', str(text))
        return value
    if isinstance(value, (list, tuple)):
        return [_substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, values): _substitute(v, values) for k, v in value.items()}
    return value


def resolve_budget(name, outdir, known_keys):
    """A preset of compare_methods.BUDGETS with its `prepare` step run and its placeholders filled.

    `prepare` = (module:function, kwargs): called as function(outdir, **kwargs) before anything
    else, it makes what the preset points at (data, detector, teacher) and returns the
    placeholder values; the preset's strings may then say e.g. '{fmnist_train}'.
    """
    if name not in compare_methods.BUDGETS:
        raise CompareError('--budget: no preset {!r}; defined: {}'.format(
            name, ', '.join(compare_methods.BUDGETS) or 'none'))
    preset = dict(compare_methods.BUDGETS[name])
    hook = preset.pop('prepare', None)
    unknown = set(preset) - set(known_keys)
    if unknown:
        raise CompareError('budget preset {} has unknown keys: {}'.format(name, ', '.join(sorted(unknown))))
    values = {}
    if hook is not None:
        import importlib
        target, kwargs = hook
        module, _, func = target.partition(':')
        say('[compare] budget {}: preparing data and networks ({})'.format(name, target))
        os.makedirs(outdir, exist_ok=True)
        try:
            values = getattr(importlib.import_module(module), func)(outdir, **dict(kwargs))
        except (OSError, ValueError) as err:
            raise CompareError('budget {}: {}'.format(name, err))
    return _substitute(preset, values)


def _list_methods(ctx, param, value):
    del param
    if not value or ctx.resilient_parsing:
        return
    for name, flags in compare_methods.METHODS.items():
        click.echo('{:28s} {}'.format(name, ' '.join(flags)))
    ctx.exit()


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--outdir', help='Where the runs, results and state go (re-use it to resume)', metavar='DIR',
              required=True)
@click.option('--data', help='Training data (folder, zip or builtin:shapes[-RES])', metavar='PATH')
@click.option('--eval-data', help='Data the metric compares against [default: --data]', metavar='PATH')
@click.option('--methods', 'methods_text', help='Comma list of method names (--list-methods) or NAME=FLAGS; '
              'may be repeated', multiple=True, metavar='LIST')
@click.option('--seeds', help='Seeds: 0,1,2 or 0-2 [default: 0]', metavar='LIST')
@click.option('--kimg', help='Budget per run in kimg (passed to train.py)', type=click.FloatRange(min=0, min_open=True),
              metavar='KIMG')
@click.option('--minutes', help='Budget per run in minutes of training (stops at the first snapshot past it)',
              type=click.FloatRange(min=0, min_open=True), metavar='MIN')
@click.option('--snap', help='Snapshot (and evaluation) interval in ticks [default: 10]',
              type=click.IntRange(min=1), metavar='INT')
@click.option('--tick', help="Tick interval in kimg [default: train.py's, 4]",
              type=click.FloatRange(min=0, min_open=True), metavar='KIMG')
@click.option('--metric', help='The one metric every snapshot gets [default: fid5k_full]', metavar='NAME')
@click.option('--better', help='Which way the metric improves [default: auto: higher for is*/pr*, else lower]',
              type=click.Choice(['auto', 'lower', 'higher']), default='auto')
@click.option('--detector-dir', help='Folder(s) holding detector files [default: $KDGAN_DETECTOR_DIR, the cache]',
              metavar='DIR')
@click.option('--detector', help='A TorchScript feature network with NVIDIA\'s detector signature to use '
              'instead of Inception for FID/KID/IS', metavar='FILE')
@click.option('--metric-module', help='Module(s) to import that register more metrics (comma list)',
              metavar='MOD')
@click.option('--skip-start', help="Don't evaluate the tick-0 snapshot (the untrained networks): with "
              'few snapshots and a slow metric, the curves start at the first trained one', is_flag=True,
              default=None)
@click.option('--extra', help='train.py flags appended to every run (split like a shell; may be repeated)',
              multiple=True, metavar='FLAGS')
@click.option('--extra-for', help="train.py flags for the methods that carry SELECTOR among their flags, as "
              "'SELECTOR:FLAGS', e.g. '--cfg=fastgan:--ngf=16 --ndf=16' (may be repeated)", multiple=True,
              metavar='SEL:FLAGS')
@click.option('--device', help='Where to train and evaluate [default: auto = cuda when available]',
              type=click.Choice(['auto', 'cpu', 'cuda']))
@click.option('--budget', help='A preset from bench/compare_methods.py BUDGETS: cpu or gpu (the Fashion-MNIST '
              'reproduction); explicit options win',
              metavar='NAME')
@click.option('--list-methods', help='Print the method table and exit', is_flag=True, expose_value=False,
              is_eager=True, callback=_list_methods)
def main(outdir, data, eval_data, methods_text, seeds, kimg, minutes, snap, tick, metric, better, detector_dir,
         detector, metric_module, skip_start, extra, extra_for, device, budget):
    """Train several methods side by side with train.py, evaluate every snapshot with one metric, and
    write results.json, results.md and plots of the metric against kimg and wall-clock.

    \b
    Example:
      python bench/compare.py --outdir=cmp --data=builtin:shapes-32 \\
        --methods=stylegan2+ada,stylegan2+diffaug --seeds=0,1 --kimg=20 --tick=1 --snap=5 \\
        --metric=fid1k_full --extra='--cbase=4096 --cmax=128'

    \b
    The Fashion-MNIST few-shot reproduction (5 methods x 3 seeds; data, evaluator and teacher made first):
      python bench/compare.py --outdir=runs/fmnist-cpu --budget=cpu

    Interrupted, run the same command again: finished runs are skipped, an unfinished one continues
    from its newest checkpoint.
    """
    given = dict(data=data, eval_data=eval_data, methods=list(methods_text) or None, seeds=seeds, kimg=kimg,
                 minutes=minutes, snap=snap, tick=tick, metric=metric, detector_dir=detector_dir, detector=detector,
                 extra=list(extra) or None, extra_for=list(extra_for) or None, device=device, skip_start=skip_start)
    if budget is not None:
        for key, value in resolve_budget(budget, os.path.abspath(os.path.expanduser(outdir)), set(given)).items():
            if given[key] is None:
                given[key] = value
    if given['data'] is None:
        raise click.UsageError("Missing option '--data'")
    if given['kimg'] is None and given['minutes'] is None:
        raise click.UsageError('give a budget per run: --kimg and/or --minutes')
    if metric_module:
        import importlib
        for module in [m.strip() for m in metric_module.split(',') if m.strip()]:
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise CompareError('--metric-module: cannot import {}: {}'.format(module, err))
    methods = given['methods']
    if not methods:
        raise click.UsageError("Missing option '--methods' (see --list-methods)")
    extra_flags = []
    for item in given['extra'] or []:
        extra_flags += shlex.split(item) if isinstance(item, str) else list(item)
    check_flags(extra_flags, '--extra')
    extra_for_flags = parse_extra_for(given['extra_for'])
    outdir = os.path.abspath(os.path.expanduser(outdir))
    detector_dir = given['detector_dir']
    if detector_dir is not None:
        detector_dir = os.pathsep.join(os.path.abspath(os.path.expanduser(d)) for d in detector_dir.split(os.pathsep))
    if given['detector'] is not None:
        os.makedirs(outdir, exist_ok=True)
        detector_dir = stage_detector(outdir, given['detector'], detector_dir)
    cfg = Config(outdir=outdir, data=given['data'], eval_data=given['eval_data'] or given['data'],
                 methods=apply_extra_for(parse_methods(methods if isinstance(methods, list) else [methods]),
                                         extra_for_flags),
                 seeds=parse_seeds(given['seeds'] if given['seeds'] is not None else '0'),
                 kimg=given['kimg'], minutes=given['minutes'], snap=given['snap'] or 10, tick=given['tick'],
                 metric=given['metric'] or 'fid5k_full', better=better, detector_dir=detector_dir,
                 extra=extra_flags, device=given['device'] or 'auto', budget=budget,
                 skip_start=bool(given['skip_start']))
    command = ' '.join(shlex.quote(a) for a in ['python', os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)]
                       + sys.argv[1:])
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        compare(cfg, command)
    except KeyboardInterrupt:
        say('[compare] interrupted; run the same command again to continue where it stopped')
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == '__main__':
    main()
