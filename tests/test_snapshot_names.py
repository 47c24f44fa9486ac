"""Snapshot names never collide and sort in training order (issue 16, item 6).

Before, every snapshot was `network-snapshot-<whole kimg>.pkl`, so the snapshots of one kimg
overwrote each other (a run with ticks of 0.25 kimg kept one file for kimg 0). Now the first
snapshot of a kimg keeps upstream's name and later ones in the same kimg are
`network-snapshot-<kimg>_with<NNN>img.pkl`; every reader (resume, compare, tests) takes both.
"""
import json
import os
import re
import signal
import subprocess

import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.comparison import snapshots as compare_snapshots  # noqa: E402
from training import checkpoint, config, training_loop  # noqa: E402
from helpers import data16, one_thread, own_stat_totals, tiny_stylegan2_kwargs, train_run  # noqa: F401,E402 (fixtures)

RES = 16


@pytest.fixture(autouse=True)
def fresh_stat_totals(own_stat_totals):
    """Every test here starts from empty training_stats totals (helpers.own_stat_totals)."""


def snapshot_files(run_dir, suffix='.pkl'):
    return [n for n in os.listdir(run_dir) if n.startswith('network-snapshot-') and n.endswith(suffix)]


def touch(folder, name, mtime=None):
    path = os.path.join(folder, name)
    with open(path, 'wb') as f:
        f.write(name.encode())
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_quarter_kimg_ticks_keep_every_snapshot_in_training_order(data16, tmp_path):
    """train.py --tick=0.25 --snap=1 --kimg=1 at batch 50: tick 0 after the first minibatch, then
    every 250 images and at the end. Every snapshot is kept (pickle, weights-only file and
    checkpoint), and both plain byte order (`LC_ALL=C ls`, Python's sorted) and the readers'
    order are training order. The image grids get the same names."""
    run = train_run(tmp_path / 'runs', '--data', data16, '--cbase=128', '--cmax=8', '--map-depth=1', '--batch=50',
                    '--mbstd-group=2', '--aug=noaug', '--tick=0.25', '--snap=1', '--kimg=1', '--seed=0', '--grid=1')
    with open(os.path.join(run, 'stats.jsonl')) as f:
        ticks = [round(json.loads(line)['Progress/kimg']['mean'] * 1000) for line in f if line.strip()]
    assert ticks == [50, 300, 550, 800, 1000]
    expected = ['000000', '000000_with300img', '000000_with550img', '000000_with800img', '000001']
    for suffix in ('.pkl', '.safetensors', checkpoint.CKPT_SUFFIX):
        assert sorted(snapshot_files(run, suffix)) == ['network-snapshot-{}{}'.format(s, suffix) for s in expected]
    assert sorted(n for n in os.listdir(run) if n.startswith('fakes0')) == ['fakes{}.png'.format(s) for s in expected]
    listed = subprocess.run('ls {}/network-snapshot-*.pkl'.format(run), shell=True, capture_output=True, text=True,
                            env=dict(os.environ, LC_ALL='C'), check=True).stdout.split()
    in_order = checkpoint.list_snapshots(run)
    assert [os.path.basename(p) for p in listed] == [os.path.basename(p) for p in in_order]
    # Each file holds the state of its own tick.
    nimgs = [checkpoint.load_checkpoint(checkpoint.ckpt_path_for(p))['progress']['cur_nimg'] for p in in_order]
    assert nimgs == ticks
    assert checkpoint.find_latest(run) == in_order[-1]


def test_stop_within_the_kimg_of_the_last_snapshot_is_saved(data16, tmp_path):
    """SIGTERM mid-tick, in the same kimg as the previous snapshot: the stop gets its own
    snapshot (it used to be skipped, as its name was taken) and resume takes it."""
    calls = []

    def stop_after_tick_1(cur, total):
        calls.append(cur)
        if len(calls) == 3:     # Start, tick 0, tick 1: the next minibatch is mid-tick 2.
            os.kill(os.getpid(), signal.SIGTERM)

    def unhandled(signum, _frame):
        raise RuntimeError('SIGTERM was not handled by the training loop')

    run_dir = str(tmp_path / 'runs' / '00000-stopped')
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with pytest.raises(Exception) as caught:
            training_loop.training_loop(run_dir=run_dir, progress_fn=stop_after_tick_1, **tiny_stylegan2_kwargs(
                data16, random_seed=1, total_kimg=1, kimg_per_tick=0.016, network_snapshot_ticks=1))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert 'Stopped by SIGTERM at kimg 0.024' in str(caught.value), caught.value
    assert sorted(snapshot_files(run_dir, checkpoint.CKPT_SUFFIX)) == [
        'network-snapshot-000000.ckpt.pt', 'network-snapshot-000000_with020img.ckpt.pt',
        'network-snapshot-000000_with024img.ckpt.pt']
    where = checkpoint.resolve_resume(str(tmp_path / 'runs'))
    assert where.exact and where.kimg == 0 and where.ckpt.endswith('network-snapshot-000000_with024img.ckpt.pt')
    assert checkpoint.load_checkpoint(where.ckpt)['progress']['cur_nimg'] == 24


def test_folder_with_upstream_names_still_resumes(data16, tmp_path):
    """A run folder written before this change (whole-kimg names only; here a real snapshot
    renamed to kimg 3 beside an older one) resumes exactly from its newest, in the loop and in
    train.py's --resume resolution."""
    old = tmp_path / 'old'
    training_loop.training_loop(run_dir=str(old), **tiny_stylegan2_kwargs(
        data16, random_seed=1, total_kimg=0.004, kimg_per_tick=0.004, network_snapshot_ticks=1))
    for suffix in ('.pkl', '.safetensors', checkpoint.CKPT_SUFFIX):
        if (old / ('network-snapshot-000000' + suffix)).exists():
            os.rename(old / ('network-snapshot-000000' + suffix), old / ('network-snapshot-000003' + suffix))
    touch(str(old), 'network-snapshot-000001.pkl')
    touch(str(old), 'network-snapshot-000001.ckpt.pt')
    where = checkpoint.resolve_resume(str(old))
    assert where.exact and where.kimg == 3 and where.ckpt == str(old / 'network-snapshot-000003.ckpt.pt')
    new = tmp_path / 'new'
    training_loop.training_loop(run_dir=str(new), resume_pkl=str(old), **tiny_stylegan2_kwargs(
        data16, random_seed=1, total_kimg=0.008, kimg_per_tick=0.004, network_snapshot_ticks=1))
    after = checkpoint.load_checkpoint(checkpoint.ckpt_path_for(checkpoint.find_latest(str(new))))
    assert after['progress']['cur_nimg'] == 8
    target, exact, _what = config.resolve_resume(str(old))
    assert exact and target == str(old / 'network-snapshot-000003.pkl')


def test_mixed_folder_orders_by_training_progress(tmp_path):
    """Old and new names in one folder: the readers order them by (kimg, images past it), which
    is also their byte order; the newest complete snapshot is the one resume takes."""
    folder = str(tmp_path)
    names = ['000000', '000000_with250img', '000000_with500img', '000001', '000001_with750img', '000002', '000010']
    for stem in reversed(names):
        touch(folder, 'network-snapshot-{}.pkl'.format(stem))
        touch(folder, 'network-snapshot-{}.safetensors'.format(stem))
    for stem in names[:-1]:   # The newest has no checkpoint: incomplete.
        touch(folder, 'network-snapshot-{}{}'.format(stem, checkpoint.CKPT_SUFFIX))
    touch(folder, 'network-snapshot-000002_with5img.pkl')    # Not a snapshot name: ignored.
    listed = [os.path.basename(p) for p in checkpoint.list_snapshots(folder)]
    assert listed == ['network-snapshot-{}.pkl'.format(s) for s in names]
    # Byte order, and a model of glibc locales' first pass (en_US.UTF-8 `ls`: punctuation skipped,
    # case folded, digits before letters), for every file kind of a snapshot and for the grids.
    def locale_key(name):
        return re.sub(r'[^0-9a-z]', '', name.lower())
    for pattern in ('network-snapshot-{}.pkl', 'network-snapshot-{}.ckpt.pt', 'network-snapshot-{}.safetensors',
                    'fakes{}.png'):
        in_order = [pattern.format(s) for s in names]
        assert sorted(in_order) == in_order and sorted(in_order, key=locale_key) == in_order, pattern
    assert [checkpoint.snapshot_order(n) for n in listed] == [(0, -1), (0, 250), (0, 500), (1, -1), (1, 750),
                                                              (2, -1), (10, -1)]
    assert checkpoint.find_latest(folder) == os.path.join(folder, 'network-snapshot-000002.pkl')
    assert checkpoint._newest_pickle(folder) == os.path.join(folder, 'network-snapshot-000010.pkl')
    assert checkpoint.resolve_resume(os.path.join(folder, 'network-snapshot-000001_with750img.pkl')).kimg == 1
    # The writer's side: the first snapshot of a kimg keeps upstream's name.
    stems = []
    previous = None
    for nimg in (0, 250, 500, 1000, 1750, 2000, 10000):
        stems.append(checkpoint.snapshot_stem(nimg, previous))
        previous = nimg
    assert stems == names


@pytest.mark.parametrize('stems', [['000000', '000004', '000008'],
                                   ['000000', '000000_with300img', '000000_with550img', '000001']])
def test_compare_keeps_each_ticks_snapshot_for_old_and_new_names(tmp_path, stems):
    """compare's reader of a train.py session: each tick's snapshot (found by name and mtime)
    is kept under its tick, whether the folder has upstream's names or the new ones, and the
    session's newest checkpoint is the last one."""
    seg_dir = tmp_path / 'train' / '00000-run'
    seg_dir.mkdir(parents=True)
    kimgs = {'000000': 0.05, '000004': 4.032, '000008': 8.064, '000000_with300img': 0.3,
             '000000_with550img': 0.55, '000001': 1.0}
    lines = []
    for tick, stem in enumerate(stems):
        stamp = 1000.0 + 10 * tick
        touch(str(seg_dir), 'network-snapshot-{}.pkl'.format(stem), mtime=stamp - 1)
        touch(str(seg_dir), 'network-snapshot-{}{}'.format(stem, checkpoint.CKPT_SUFFIX), mtime=stamp - 1)
        lines.append(json.dumps({'Progress/tick': {'mean': tick}, 'Progress/kimg': {'mean': kimgs[stem]},
                                 'Timing/total_sec': {'mean': 5.0 * tick}, 'timestamp': stamp}))
    (seg_dir / 'stats.jsonl').write_text('\n'.join(lines) + '\n')
    snap_dir = tmp_path / 'snapshots'
    snap_dir.mkdir()
    (seg,) = compare_snapshots.list_segments(str(tmp_path / 'train'))
    found = compare_snapshots.collect(seg, str(snap_dir), snap_ticks=1)
    assert [t.tick for t in found] == list(range(len(stems))) and seg.lost_ticks == []
    for tick, stem in enumerate(stems):
        with open(seg.snapshot_ticks[tick], 'rb') as f:
            assert f.read() == 'network-snapshot-{}.pkl'.format(stem).encode()
    assert compare_snapshots.latest_checkpoint([seg]) == str(seg_dir / 'network-snapshot-{}{}'.format(
        stems[-1], checkpoint.CKPT_SUFFIX))
    assert [s['tick'] for s in compare_snapshots.history([seg])] == list(range(len(stems)))
