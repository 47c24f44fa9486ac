"""bench/compare.py --jobs: runs of a comparison training at the same time.

A tiny grid as in tests/test_compare.py (shapes-32, a tiny detector), one method and two seeds so that
one dry run serves both: --jobs=2, killed by SIGTERM while both runs train and run again, must end
with the networks and metric values that --jobs=1 gives; each child gets its share of the cores as
OMP_NUM_THREADS, and SIGTERM stops both children."""
import json
import os
import re
import subprocess

import pytest
import torch

from helpers import sigterm_when
from test_compare import ROOT, TinyDetector, compare_args

from bench.comparison import runner
from bench.comparison.grid import Config

pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:FutureWarning')
METHOD = 'stylegan2+noaug'
KIMG = '0.064'      # three snapshots per run (ticks 0-2)


def _args(outdir, det_dir, jobs):
    args = [a for a in compare_args(outdir, det_dir, kimg=KIMG) if not a.startswith(('--methods=', '--seeds='))]
    return args + ['--methods=' + METHOD, '--seeds=0,1', '--jobs={}'.format(jobs)]


def _results(outdir):
    with open(os.path.join(outdir, 'results.json'), encoding='utf-8') as f:
        return json.load(f)


def _child_environ(pid):
    with open('/proc/{}/environ'.format(pid), 'rb') as f:
        pairs = [item.split(b'=', 1) for item in f.read().split(b'\0') if b'=' in item]
    return {k.decode(): v.decode() for k, v in pairs}


def _killed_while_both_train(args, env):
    """Start a --jobs=2 comparison, read both children's environments, SIGTERM it once one has
    logged a tick. Returns (exit code, output, {pid: OMP_NUM_THREADS})."""
    threads = {}

    def both_started_one_ticked(line):
        m = re.search(r'seed [01]: training .*\(train\.py pid (\d+)\)', line)
        if m:
            pid = int(m.group(1))
            threads[pid] = _child_environ(pid).get('OMP_NUM_THREADS')
        return len(threads) == 2 and re.search(r'\] tick 1 ', line) is not None

    rc, text, _ = sigterm_when(args, ROOT, env, both_started_one_ticked)
    return rc, text, threads


@pytest.fixture
def jobs_runs(tmp_path):
    """--jobs=1 first (its first evaluation fills the cache of real-image statistics), then --jobs=2
    killed and resumed, with no OMP_NUM_THREADS of the user's: the runner sets it per child."""
    base = tmp_path
    det_dir = str(base / 'detectors')
    os.makedirs(det_dir)
    torch.jit.script(TinyDetector().eval()).save(os.path.join(det_dir, 'inception-2015-12-05.pt'))
    env = dict(os.environ, DNNLIB_CACHE_DIR=str(base / 'cache'), OMP_NUM_THREADS=str(runner.child_threads(2)))
    env.pop('KDGAN_DETECTOR_DIR', None)
    serial = subprocess.run(_args(str(base / 'serial'), det_dir, 1), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    assert serial.returncode == 0, serial.stdout[-3000:]
    env.pop('OMP_NUM_THREADS')
    args = _args(str(base / 'parallel'), det_dir, 2)
    rc, text, threads = _killed_while_both_train(args, env)
    with open(base / 'parallel' / 'state.json', encoding='utf-8') as f:
        state = json.load(f)
    # Resumed at the serial run's thread count: the runner's own evaluation then rounds as it did there
    # (at torch's default of 2 threads, niced on a loaded 2-core machine, one evaluation took minutes).
    env['OMP_NUM_THREADS'] = str(runner.child_threads(2))
    again = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=900, check=False)
    assert again.returncode == 0, again.stdout[-3000:]
    return dict(base=base, serial=_results(str(base / 'serial')), rc=rc, first=text, threads=threads, state=state,
                again=again.stdout, parallel=_results(str(base / 'parallel')))


def _snapshots(results):
    return [(r['method'], r['seed'], r['status'], [(s['tick'], s['kimg']) for s in r['snapshots']])
            for r in results['runs']]


def _g_ema(results, outdir, run, snap):
    import legacy
    with open(os.path.join(outdir, results['runs'][run]['run_dir'], 'snapshots', snap['name']), 'rb') as f:
        return legacy.load_network_pkl(f)['G_ema'].state_dict()


def _check_two_jobs_give_the_results_of_one(jobs_runs):
    serial, parallel = jobs_runs['serial'], jobs_runs['parallel']
    assert _snapshots(serial) == [(METHOD, s, 'finished', [(0, 0.004), (1, 0.036), (2, 0.064)]) for s in (0, 1)]
    assert _snapshots(parallel) == _snapshots(serial)
    for run, (a, b) in enumerate(zip(serial['runs'], parallel['runs'])):
        for i, (sa, sb) in enumerate(zip(a['snapshots'], b['snapshots'])):
            ga = _g_ema(serial, str(jobs_runs['base'] / 'serial'), run, sa)
            gb = _g_ema(parallel, str(jobs_runs['base'] / 'parallel'), run, sb)
            assert all(torch.equal(ga[k], gb[k]) for k in ga), (run, i)
            # The first evaluation of --jobs=1 also computed the real-image statistics (cold cache): the
            # evaluator's throw-away first pass keeps that from shifting its latents. The runner's own
            # evaluation ran at 1 thread, then at torch's default: rounding may differ.
            assert sa['value'] == pytest.approx(sb['value'], rel=1e-5), (run, i)
    assert len({s['value'] for r in parallel['runs'] for s in r['snapshots']}) == 6


def _check_two_jobs_train_at_the_same_time(jobs_runs):
    """Both runs start before either is done; every line of a run names it."""
    text = jobs_runs['first'] + jobs_runs['again']
    assert '[compare] run 1/2 {} seed 0: start'.format(METHOD) in jobs_runs['first']
    assert '[compare] run 2/2 {} seed 1: start'.format(METHOD) in jobs_runs['first']
    for line in text.splitlines():
        if re.match(r'\s*\[[^\]]+\] (tick|snapshot|fid64_full|Resuming)', line):
            assert re.match(r'\s*\[{} seed [01]\]'.format(re.escape(METHOD)), line), line


def _check_children_get_their_share_of_the_cores(jobs_runs, monkeypatch):
    threads = jobs_runs['threads']
    assert len(threads) == 2
    assert set(threads.values()) == {str(max(1, len(os.sched_getaffinity(0)) // 2))}
    cfg = Config(outdir='/tmp/x', detector_dir=None, jobs=2)
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    env = runner._child_env(cfg)
    assert env['OMP_NUM_THREADS'] == env['MKL_NUM_THREADS'] == str(runner.child_threads(2))
    monkeypatch.setenv('OMP_NUM_THREADS', '3')      # the user's setting wins
    assert runner._child_env(cfg)['OMP_NUM_THREADS'] == '3'
    monkeypatch.delenv('OMP_NUM_THREADS')
    assert 'OMP_NUM_THREADS' not in runner._child_env(Config(outdir='/tmp/x', detector_dir=None, jobs=1))


def _check_a_killed_parallel_comparison_resumes(jobs_runs):
    assert jobs_runs['rc'] == 130, jobs_runs['first'][-3000:]
    for pid in jobs_runs['threads']:
        with pytest.raises(ProcessLookupError):    # both children stopped with the runner
            os.kill(pid, 0)
    statuses = {r['seed']: r['status'] for r in jobs_runs['state']['runs'].values()}
    unfinished = sorted(s for s, status in statuses.items() if status != 'finished')
    assert unfinished, 'the kill came after both runs ended: {}'.format(statuses)
    starts = sorted(re.findall(r'\[compare\] \S+ seed (\d): training (\S+)', jobs_runs['again']))
    assert [int(s) for s, _ in starts] == unfinished
    assert 'resumed' in {how for _, how in starts}   # the run that logged tick 1 continues from its checkpoint


def test_parallel_comparison(jobs_runs, monkeypatch):
    """One test over the module's three comparisons: under pytest-xdist each test may land on another
    worker, and every worker would build the fixture again (three comparisons each)."""
    _check_two_jobs_give_the_results_of_one(jobs_runs)
    _check_two_jobs_train_at_the_same_time(jobs_runs)
    _check_children_get_their_share_of_the_cores(jobs_runs, monkeypatch)
    _check_a_killed_parallel_comparison_resumes(jobs_runs)


def test_a_budget_preset_may_set_jobs(monkeypatch, tmp_path):
    """`jobs` is a preset key like the others; --jobs on the command line wins; a bad value is refused."""
    from click.testing import CliRunner
    from bench import compare
    seen = []
    monkeypatch.setattr(compare, 'compare', lambda cfg, command: seen.append(cfg.jobs))
    monkeypatch.setitem(compare.compare_methods.BUDGETS, 'jobsy', dict(
        data='builtin:shapes-32', methods=['stylegan2+ada'], kimg=1, jobs=2))
    out = str(tmp_path / 'out')
    for args in ([], ['--jobs=1'], ['--jobs=3']):
        res = CliRunner().invoke(compare.main, ['--outdir', out, '--budget=jobsy'] + args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
    assert seen == [2, 1, 3]
    monkeypatch.setitem(compare.compare_methods.BUDGETS, 'jobsy', dict(data='builtin:shapes-32', kimg=1, jobs=0))
    res = CliRunner().invoke(compare.main, ['--outdir', out, '--budget=jobsy'])
    assert res.exit_code != 0 and 'jobs: expected a whole number' in res.output
