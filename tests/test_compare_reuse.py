"""compare.py --reuse: finished runs of another comparison are taken only when nothing tells them apart."""
import json
import os

import pytest

from bench.comparison.grid import Config, run_key
from bench.comparison.reuse import adopt_runs
from bench.comparison.runner import State, run_spec

METRIC = 'fid50k_full'


def _config(outdir):
    return Config(outdir=str(outdir), data=os.path.join(str(outdir), 'data', 'train.zip'),
                  eval_data=os.path.join(str(outdir), 'data', 'test.zip'), methods={'fast': ['--cfg=fastgan']},
                  seeds=[0, 1], kimg=1, minutes=None, snap=1, tick=1, device='cpu', extra=[], metric=METRIC)


def _metric_key(cfg):
    return '{}|{}|inception=abc'.format(METRIC, cfg.eval_data)


def _write_data(outdir, train=b'train bytes', test=b'test bytes'):
    os.makedirs(os.path.join(str(outdir), 'data'), exist_ok=True)
    for name, data in (('train.zip', train), ('test.zip', test)):
        with open(os.path.join(str(outdir), 'data', name), 'wb') as f:
            f.write(data)


@pytest.fixture
def source(tmp_path):
    """A comparison in which seed 0 finished (one evaluated snapshot) and seed 1 is still training."""
    cfg = _config(tmp_path / 'main')
    _write_data(cfg.outdir)
    state = State(os.path.join(cfg.outdir, 'state.json'))
    for seed, status in ((0, 'finished'), (1, 'training')):
        snap_dir = cfg.run_dir('fast', seed, 'snapshots')
        os.makedirs(snap_dir)
        with open(os.path.join(snap_dir, 'snap-1.pkl'), 'wb') as f:
            f.write(b'network %d' % seed)
        state.runs[run_key('fast', seed)] = dict(
            method='fast', seed=seed, spec=run_spec(cfg, 'fast', seed), status=status,
            snapshots=[dict(name='snap-1.pkl', tick=1, kimg=1.0, seconds=5.0)],
            evals={_metric_key(cfg): {'snap-1.pkl': dict(value=321.0, results={}, seconds=1.0)}})
    state.save()
    return cfg


def test_a_finished_run_with_the_same_settings_and_data_is_linked_in(source, tmp_path):
    cfg = _config(tmp_path / 'ablation')
    _write_data(cfg.outdir)
    state = State(os.path.join(cfg.outdir, 'state.json'))
    grid = [('fast', 0), ('fast', 1)]
    assert adopt_runs(cfg, state, grid, [source.outdir], _metric_key(cfg)) == ['fast seed 0']
    entry = state.runs[run_key('fast', 0)]
    assert entry['status'] == 'trained' and entry['reused_from'] == source.outdir
    assert entry['evals'] == {_metric_key(cfg): {'snap-1.pkl': dict(value=321.0, results={}, seconds=1.0)}}
    mine = os.path.join(cfg.run_dir('fast', 0, 'snapshots'), 'snap-1.pkl')
    theirs = os.path.join(source.run_dir('fast', 0, 'snapshots'), 'snap-1.pkl')
    assert os.path.samefile(mine, theirs)
    assert run_key('fast', 1) not in state.runs          # unfinished there: trained here
    with open(os.path.join(cfg.outdir, 'state.json')) as f:
        assert json.load(f)['runs'][run_key('fast', 0)]['reused_from'] == source.outdir
    # A second call takes nothing more (the run is already here).
    assert adopt_runs(cfg, state, grid, [source.outdir], _metric_key(cfg)) == []


def test_other_data_other_flags_or_no_source_take_nothing(source, tmp_path, capsys):
    grid = [('fast', 0)]
    other_data = _config(tmp_path / 'a')
    _write_data(other_data.outdir, train=b'other train bytes')
    assert adopt_runs(other_data, State(os.path.join(other_data.outdir, 'state.json')), grid, [source.outdir],
                      _metric_key(other_data)) == []
    assert 'other settings or data' in capsys.readouterr().out

    other_flags = _config(tmp_path / 'b')
    other_flags.methods = {'fast': ['--cfg=fastgan', '--ngf=16']}
    _write_data(other_flags.outdir)
    assert adopt_runs(other_flags, State(os.path.join(other_flags.outdir, 'state.json')), grid,
                      [source.outdir], _metric_key(other_flags)) == []

    nowhere = _config(tmp_path / 'c')
    _write_data(nowhere.outdir)
    assert adopt_runs(nowhere, State(os.path.join(nowhere.outdir, 'state.json')), grid,
                      [str(tmp_path / 'missing')], _metric_key(nowhere)) == []
    assert 'nothing to take' in capsys.readouterr().out


def test_evaluations_on_other_test_data_are_not_kept(source, tmp_path):
    cfg = _config(tmp_path / 'ablation')
    _write_data(cfg.outdir, test=b'another test split')
    state = State(os.path.join(cfg.outdir, 'state.json'))
    assert adopt_runs(cfg, state, [('fast', 0)], [source.outdir], _metric_key(cfg)) == ['fast seed 0']
    assert state.runs[run_key('fast', 0)]['evals'] == {}     # evaluated again here


def test_the_ablation_preset_reuses_the_main_outdir():
    from bench import compare_methods
    from bench.comparison.grid import _substitute
    preset = compare_methods.BUDGETS['cpu-ablation']
    resolved = _substitute(preset['reuse'], dict(outdir='/x/runs/fmnist-cpu-ablation'))
    assert [os.path.normpath(p) for p in resolved] == ['/x/runs/fmnist-cpu']
