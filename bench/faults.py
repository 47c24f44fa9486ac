"""Fault injection: kill a small CPU training run with SIGKILL again and again, resume it from
its --outdir every time, and check that nothing was corrupted, that no kill cost more than one
snapshot interval, and that the finished run's state equals an uninterrupted run's, bit for bit.

    python bench/faults.py --kills=20 --outdir=runs/faults --report=docs/benchmarks.md
    python bench/faults.py --kills=3 --outdir=/tmp/faults          # the short version of make test

Kill moments rotate over three kinds, each at a random point:
- `startup`: while train.py starts (before or while it builds the run; a resumed run killed here
  leaves a folder without snapshot, which the next --resume=<outdir> has to look through);
- `train`: a random time into training;
- `write`: the moment a temporary file of a snapshot write appears in the run folder (the
  pickle, model file, checkpoint or image grid being written).
After each kill every file of the outdir is checked (pickles unpickle, checkpoints load with
weights_only=True, model files and PNGs open, jsonl lines are strict JSON); after the last
session, no temporary file may be left anywhere.
"""

import argparse
import datetime
import json
import os
import pickle
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, 'stylegan2_ada')
for _path in (HARNESS, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

KINDS = ('startup', 'train', 'write')
TICK_KIMG, SNAP_TICKS, BATCH = 0.008, 2, 4      # A snapshot every 4 minibatches.
_TEMPORARY = re.compile(r'\.tmp\d+$')


def train_command(outdir, data, kimg, resume=None):
    cmd = [sys.executable, os.path.join(HARNESS, 'train.py'), '--outdir', outdir, '--data', data, '--device=cpu',
           '--metrics=none', '--cbase=128', '--cmax=8', '--map-depth=1', '--batch={}'.format(BATCH), '--aug=ada',
           '--target=0.2', '--ada-kimg=1', '--workers=0', '--tick={}'.format(TICK_KIMG), '--grid=2',
           '--snap={}'.format(SNAP_TICKS), '--seed=5', '--kimg={}'.format(kimg)]
    return cmd + (['--resume=' + resume] if resume else [])


def child_env():
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([HARNESS, ROOT]))


def _newest_run(outdir):
    runs = sorted(n for n in os.listdir(outdir) if re.match(r'^\d+-', n)) if os.path.isdir(outdir) else []
    return os.path.join(outdir, runs[-1]) if runs else None


def _temporaries(outdir):
    return [os.path.join(root, n) for root, _d, names in os.walk(outdir) for n in names if _TEMPORARY.search(n)]


def _wait_until(proc, test, limit):
    """Poll `test()` every 2 ms until true (True), the process ends or `limit` seconds pass (False)."""
    end = time.time() + limit
    while time.time() < end and proc.poll() is None:
        if test():
            return True
        time.sleep(0.002)
    return False


def _training_started(outdir, known, ticks=0):
    """True once this session's run folder has its stats.jsonl (with at least `ticks` lines)."""
    def test():
        run = _newest_run(outdir)
        path = None if run is None or run in known else os.path.join(run, 'stats.jsonl')
        if path is None or not os.path.isfile(path):
            return False
        with open(path, 'rb') as f:
            return f.read().count(b'\n') >= ticks
    return test


def one_session(outdir, data, kimg, kind, rng):
    """Start train.py (resuming from the outdir when it has a complete snapshot), kill it as
    `kind` says (None: let it finish). Returns (exit code, whether a temporary existed at the kill)."""
    resume = outdir if _checkpoints(outdir) else None
    known = set(os.path.join(outdir, n) for n in os.listdir(outdir)) if os.path.isdir(outdir) else set()
    proc = subprocess.Popen(train_command(outdir, data, kimg, resume), env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    if kind == 'startup':
        time.sleep(rng.uniform(0.2, 4.0))
    elif kind == 'train':
        _wait_until(proc, _training_started(outdir, known, ticks=1), 120)
        time.sleep(rng.uniform(0.0, 3.0))
    elif kind == 'write':
        _wait_until(proc, _training_started(outdir, known), 120)
        writing = lambda: bool(_temporaries(_newest_run(outdir) or outdir))   # noqa: E731
        for _skip in range(rng.randint(0, 2)):    # Not always the session's first write.
            _wait_until(proc, writing, 30)
            _wait_until(proc, lambda: not writing(), 30)
        _wait_until(proc, writing, 30)
    during_write = False
    if kind is not None and proc.poll() is None:
        run = _newest_run(outdir)
        proc.send_signal(signal.SIGKILL)
        during_write = bool(run and _temporaries(run))
    proc.wait()
    return proc.returncode, during_write


def _checkpoints(outdir):
    """Every checkpoint under `outdir` (found here, independently of the harness's own lookup)."""
    return [os.path.join(root, n) for root, _d, names in os.walk(outdir) for n in names if n.endswith('.ckpt.pt')]


def _newest_checkpoint(outdir):
    """The loaded checkpoint with the most images trained (None when there is none)."""
    import torch
    best = None
    for path in _checkpoints(outdir):
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
        if best is None or ckpt['progress']['cur_nimg'] > best['progress']['cur_nimg']:
            best = ckpt
    return best


def corrupt_files(outdir):
    """Every file of the outdir that does not read as what its name says (temporaries excepted)."""
    import numpy as np
    import PIL.Image
    import torch
    from safetensors.torch import load_file
    bad = []
    for root, _dirs, names in os.walk(outdir):
        for name in names:
            path = os.path.join(root, name)
            try:
                if _TEMPORARY.search(name):
                    continue
                if name.endswith('.ckpt.pt'):
                    torch.load(path, map_location='cpu', weights_only=True)
                elif name.endswith('.pkl'):
                    with open(path, 'rb') as f:
                        pickle.load(f)
                elif name.endswith('.safetensors'):
                    load_file(path)
                elif name.endswith('.png'):
                    with PIL.Image.open(path) as img:
                        np.asarray(img)
                elif name.endswith('.jsonl') or name.endswith('.json'):
                    _strict_json(path)
            except Exception as err:   # Any failure to read is what this check looks for.
                bad.append('{}: {}'.format(path, err))
    return bad


def _strict_json(path):
    def refuse(token):
        raise ValueError('non-standard token ' + token)
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if path.endswith('.json'):
        json.loads(text, parse_constant=refuse)
        return
    for line in text.splitlines():
        json.loads(line, parse_constant=refuse)


def progress_nimg(outdir):
    """(images of the newest tick any session logged, images of the newest complete snapshot)."""
    logged = 0
    for root, _dirs, names in os.walk(outdir):
        if 'stats.jsonl' in names:
            with open(os.path.join(root, 'stats.jsonl'), encoding='utf-8') as f:
                for line in f:
                    logged = max(logged, int(round(json.loads(line)['Progress/kimg']['mean'] * 1000)))
    newest = _newest_checkpoint(outdir)
    return logged, 0 if newest is None else int(newest['progress']['cur_nimg'])


def final_state(outdir):
    ckpt = _newest_checkpoint(outdir)
    del ckpt['progress']['elapsed_sec']
    return ckpt


def differences(a, b, where='ckpt'):
    import torch
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [where + ' (keys)']
        return [d for key in a for d in differences(a[key], b[key], '{}.{}'.format(where, key))]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, '{}[{}]'.format(where, i))]
    return [] if a == b else [where]


def run_faults(workdir, kills, seed=0, kimg=None, log=print):
    """The whole experiment in `workdir`; returns a dict of figures (see `report_line`). The run
    is long enough (`kimg`, by default from `kills`) that the kills end before it does."""
    from training import shapes
    rng = random.Random(seed)
    kimg = round(0.04 + 0.04 * kills, 3) if kimg is None else kimg
    started = time.time()
    data = shapes.materialize_builtin('builtin:shapes', os.path.join(workdir, 'data'), resolution=16, num_images=16)
    reference, faulty = os.path.join(workdir, 'reference'), os.path.join(workdir, 'faulty')
    for folder in (reference, faulty):
        shutil.rmtree(folder, ignore_errors=True)
    code, _ = one_session(reference, data, kimg, None, rng)
    assert code == 0, 'the uninterrupted run failed (exit {})'.format(code)
    figures = dict(kills=0, during_write=0, corrupt=[], worst_loss_nimg=0, sessions=1, kinds={k: 0 for k in KINDS})
    interval = int(round(TICK_KIMG * SNAP_TICKS * 1000))
    finished = False
    while figures['kills'] < kills and not finished:
        kind = KINDS[figures['kills'] % len(KINDS)] if figures['kills'] < len(KINDS) else rng.choice(KINDS)
        before, _ = progress_nimg(faulty)
        code, during_write = one_session(faulty, data, kimg, kind, rng)
        figures['sessions'] += 1
        finished = code == 0
        if finished:
            log('  the run finished before its {} kill (make it longer: --kimg)'.format(kind))
            continue
        figures['kills'] += 1
        figures['kinds'][kind] += 1
        figures['during_write'] += during_write
        logged, saved = progress_nimg(faulty)
        figures['worst_loss_nimg'] = max(figures['worst_loss_nimg'], max(logged, before) - saved)
        figures['corrupt'] += corrupt_files(faulty)
        log('  kill {:2d} ({}{}): logged {} img, resumable {} img'.format(
            figures['kills'], kind, ', mid-write' if during_write else '', logged, saved))
    while not finished:
        code, _ = one_session(faulty, data, kimg, None, rng)
        figures['sessions'] += 1
        finished = code == 0
        if finished:
            break
        figures['corrupt'].append('a final session exited with {}'.format(code))
        if figures['sessions'] > kills + 5:
            break
    figures['leftovers'] = _temporaries(workdir)
    figures['diffs'] = differences(final_state(reference), final_state(faulty))
    figures['interval_nimg'] = interval
    figures['exact'] = not figures['diffs'] and figures['kills'] == kills
    figures['ok'] = (figures['exact'] and not figures['corrupt'] and not figures['leftovers']
                     and figures['worst_loss_nimg'] <= interval)
    figures['seconds'] = time.time() - started
    return figures


def report_line(figures):
    """One row for docs/benchmarks.md: date, machine, load, and the verdict with its figures."""
    load = ', '.join('{:.1f}'.format(x) for x in os.getloadavg())
    verdict = '{}/{} kills resumed exactly'.format(figures['kills'] if figures['exact'] else 0, figures['kills'])
    return ('| {date} | {node} ({cpus} CPUs, {system}) | {load} | {verdict}; {write} kills mid-write; '
            'kinds {kinds}; corrupt files {corrupt}; leftover temporaries {left}; worst loss {loss} img '
            '(snapshot interval {interval} img) | {secs:.0f} s |'.format(
                date=datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC'), node=platform.node(),
                cpus=os.cpu_count(), system=platform.system(), load=load, verdict=verdict,
                write=figures['during_write'], kinds=figures['kinds'], corrupt=len(figures['corrupt']),
                left=len(figures['leftovers']), loss=figures['worst_loss_nimg'], interval=figures['interval_nimg'],
                secs=figures['seconds']))


_SECTION = '''
## Fault injection (issue 12, `make faults`)

`bench/faults.py --kills=20`: a CPU run (builtin:shapes 16x16, tiny StyleGAN2 with ADA, a
snapshot every {interval} images) killed with SIGKILL at start-up, in training and while a
snapshot is written, resumed from its --outdir after every kill, compared with an uninterrupted
run (G, D, G_ema, optimisers, augment pipe, random streams: bit for bit).

| date | machine | load avg | result | wall |
|---|---|---|---|---|
'''


def append_report(path, figures):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if '## Fault injection (issue 12' not in text:
        text = text.rstrip('\n') + '\n' + _SECTION.format(interval=figures['interval_nimg'])
    text = text.rstrip('\n') + '\n' + report_line(figures) + '\n'
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--kills', type=int, default=20)
    parser.add_argument('--outdir', default=os.path.join(ROOT, 'runs', 'faults'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--kimg', type=float, help='Length of the run [default: 0.04 + 0.04 per kill]')
    parser.add_argument('--report', help='Append the figures to this markdown file (docs/benchmarks.md)')
    opts = parser.parse_args()
    figures = run_faults(opts.outdir, opts.kills, seed=opts.seed, kimg=opts.kimg)
    print(report_line(figures))
    for line in figures['corrupt'] + figures['leftovers'] + figures['diffs']:
        print('  ' + line)
    if opts.report:
        append_report(opts.report, figures)
    sys.exit(0 if figures['ok'] else 1)


if __name__ == '__main__':
    main()
