"""Time and progress on the console (issue 16, item 1): a start-up estimate from a short warm-up,
an eta on every status line, and a progress line whenever `progress_sec` pass without a line,
whatever the tick length; none of it changes tick boundaries, statistics or weights."""
import json
import os
import pickle
import re

import pytest
import torch

import dnnlib
from torch_utils import training_stats
from training import progress, shapes, training_loop
from helpers import one_thread, tiny_stylegan2_kwargs  # noqa: F401,E402 (one_thread: autouse fixture)

E = dnnlib.EasyDict
BATCH = 4
TICK_KIMG = 0.016
TOTAL_KIMG = 0.04
ETA = r'eta (\d+[dhms])( \d+[dhms])?'




@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return shapes.materialize_builtin('builtin:shapes', str(tmp_path_factory.mktemp('data')), resolution=32,
                                      num_images=24)


def tiny_kwargs(path, **overrides):
    """Ten minibatches of 4 in ticks of 16 images."""
    return tiny_stylegan2_kwargs(path, mapping_layers=2, random_seed=3, batch_size=BATCH, batch_gpu=BATCH,
                                 ema_rampup=0.05, total_kimg=TOTAL_KIMG, kimg_per_tick=TICK_KIMG,
                                 network_snapshot_ticks=100, **overrides)


def schedule():
    """Per minibatch (1-based), whether it ends a tick, as the loop decides: tick 0 after the
    first minibatch, then every TICK_KIMG, and the last one."""
    ends, tick_start, nimg, total = [], 0, 0, round(TOTAL_KIMG * 1000)
    while nimg < total:
        nimg += BATCH
        boundary = not ends or nimg >= tick_start + TICK_KIMG * 1000 or nimg >= total
        tick_start = nimg if boundary else tick_start
        ends.append(boundary)
    return ends


def train(folder, run_dir, capsys, progress_sec, monkeypatch):
    # Statistics are differences of process-wide running totals: start both runs from empty ones.
    monkeypatch.setattr(training_stats, '_totals', {})
    monkeypatch.setattr(training_stats, '_counters', {})
    training_loop.training_loop(run_dir=str(run_dir), **tiny_kwargs(folder, progress_sec=progress_sec))
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('Training for')) + 1
    return [line for line in lines[start:] if line.strip()]


def stats_without_clock(run_dir):
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in row.items() if not k.startswith(('Timing/', 'Resources/')) and k != 'timestamp'}
            for row in rows]


def same_stats(first, second):
    """Equal stats rows: counts and means exactly; a std to 1e-12, because a Collector's std
    comes from differences of process-wide float64 running totals and its last digits depend on
    what the process reported before (the same tolerance as tests/test_exact_resume.py)."""
    assert len(first) == len(second)
    for row_a, row_b in zip(first, second):
        assert row_a.keys() == row_b.keys()
        for name, a in row_a.items():
            b = row_b[name]
            if not isinstance(a, dict):
                assert a == b, name
                continue
            assert (a['num'], a['mean']) == (b['num'], b['mean']), name
            assert a['std'] == pytest.approx(b['std'], rel=1e-12, abs=1e-15), name


def final_weights(run_dir):
    name = sorted(n for n in os.listdir(run_dir) if n.endswith('.pkl'))[-1]
    with open(os.path.join(run_dir, name), 'rb') as f:
        snap = pickle.load(f)
    return {f'{key}.{k}': v for key in ('G', 'D', 'G_ema') for k, v in snap[key].state_dict().items()}


def test_lines_at_every_minibatch_and_numbers_unchanged(folder, tmp_path, capsys, monkeypatch):
    ends = schedule()
    quiet = train(folder, tmp_path / 'quiet', capsys, 1e9, monkeypatch)
    chatty = train(folder, tmp_path / 'chatty', capsys, 0, monkeypatch)

    for lines in (quiet, chatty):
        status = [line for line in lines if line.startswith('tick ')]
        assert len(status) == sum(ends)
        assert all(re.search(ETA + '$', line) for line in status), status
        assert lines[0].startswith('tick 0 ')
        estimates = [line for line in lines if line.startswith('Estimated time to reach kimg 0.04: ')]
        assert len(estimates) == 1 and re.search(r'\d+[dhms]', estimates[0])
    # Warm-up of WARMUP_MINIBATCHES after the first, or as soon as progress_sec has passed.
    assert f'timed over {progress.WARMUP_MINIBATCHES} minibatch(es)' in [
        line for line in quiet if line.startswith('Estimated')][0]
    assert 'timed over 1 minibatch(es)' in chatty[1]
    assert not any(line.startswith('progress ') for line in quiet)
    # progress_sec=0: a progress line after every minibatch that ends no tick, except the one
    # that printed the estimate.
    lines = [line for line in chatty if line.startswith('progress ')]
    assert len(lines) == ends.count(False) - 1
    assert all(re.fullmatch(r'progress kimg \d\.\d{3} of 0\.04 \(\d+\.\d%\) sec/kimg \d+\.\d\d ' + ETA
                            + r' \(this tick ends at kimg [\d.]+\)', line) for line in lines), lines

    same_stats(stats_without_clock(tmp_path / 'quiet'), stats_without_clock(tmp_path / 'chatty'))
    first, second = final_weights(tmp_path / 'quiet'), final_weights(tmp_path / 'chatty')
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_line_at_least_every_progress_sec():
    """60 s (the default) on a slow device: 7 s per minibatch of 8, ticks far apart."""
    clock, said = FakeClock(), []
    meter = progress.Progress(total_kimg=2, every_sec=60, say=said.append, clock=clock)
    nimg, when = 0, {}
    for step in range(40):
        clock.now += 7
        nimg += 8
        before = len(said)
        meter.after_minibatch(nimg, next_tick_nimg=None if step == 0 else 4000)
        if len(said) > before:
            when[step] = said[-1]
    # The first minibatch (set-up) is not timed; the estimate follows 4 timed ones at 7 s each.
    assert list(when)[0] == progress.WARMUP_MINIBATCHES
    # 28 s for 32 images: 0.875 s each; 1960 images to go: 1715 s.
    assert when[4] == ('Estimated time to reach kimg 2: 28m 35s (1.96 kimg to go at 875.00 sec/kimg, timed '
                       'over 4 minibatch(es) after the first; every status line has an eta)')
    steps = list(when)
    assert all(b - a == 9 for a, b in zip(steps, steps[1:]))   # 63 s: the first minibatch past 60 s
    # Step 13: 1888 images to go at 0.875 s.
    assert when[13] == 'progress kimg 0.112 of 2 (5.6%) sec/kimg 875.00 eta 27m 32s (this tick ends at kimg 4)'
    assert meter.eta_text(nimg, fallback_sec_per_img=1.0) == '24m 30s'   # 1680 images at 0.875 s


def test_eta_before_any_timed_minibatch_uses_the_tick():
    clock, said = FakeClock(), []
    meter = progress.Progress(total_kimg=1, every_sec=60, say=said.append, clock=clock)
    assert meter.eta_text(8, fallback_sec_per_img=0.5) == '8m 16s'   # (1000 - 8) x 0.5 s
    with pytest.raises(ValueError, match='progress_sec'):
        progress.Progress(total_kimg=1, every_sec=-1, say=print)
