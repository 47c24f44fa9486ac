"""Runs that survive (issue 12, items 1-3): a snapshot is whole or not taken, resume finds the
newest complete one (through resumed runs and outdirs) and never unpickles where a checkpoint
exists, networks-only resume only when asked, leftovers of killed writers are removed,
SIGTERM/SIGINT stop with a snapshot, ranks do not outlive their launcher, divergence stops the
run, and the logs are strict JSON."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

import dnnlib
from training import checkpoint, training_loop
from helpers import data16, one_thread, own_stat_totals, tiny_stylegan2_kwargs  # noqa: F401,E402 (fixtures)

E = dnnlib.EasyDict
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, 'stylegan2_ada')
RES = 16


@pytest.fixture(autouse=True)
def fresh_stat_totals(own_stat_totals):
    """Every test here starts from empty training_stats totals (helpers.own_stat_totals)."""


def tiny_kwargs(path, **overrides):
    """Ticks of one minibatch, a snapshot at each."""
    kw = tiny_stylegan2_kwargs(path, random_seed=1, ema_rampup=None, total_kimg=0.008, kimg_per_tick=0.004,
                               network_snapshot_ticks=1)
    kw.update(overrides)
    return kw


def booby_trap(path, marker):
    """A pickle that creates `marker` when unpickled (as a crafted network pickle could run anything)."""
    class Trap:
        def __reduce__(self):
            return (open, (str(marker), 'w'))
    with open(path, 'wb') as f:
        pickle.dump(Trap(), f)


def strict_lines(path):
    """Every line of a jsonl file, parsed as strict JSON (NaN/Infinity tokens are an error)."""
    def refuse(token):
        raise ValueError('non-standard JSON token ' + token)
    with open(path, encoding='utf-8') as f:
        return [json.loads(line, parse_constant=refuse) for line in f]


# Item 1: the snapshot unit and what resume takes.

def test_folder_resume_takes_newest_complete_snapshot_and_never_unpickles(data16, tmp_path, capsys):
    """Killed between a snapshot's pickle and its checkpoint: the folder resumes exactly from the
    previous complete snapshot; no pickle in it is ever unpickled (both are booby-trapped)."""
    first = str(tmp_path / 'A')
    training_loop.training_loop(run_dir=first, **tiny_kwargs(data16))
    names = sorted(os.listdir(first))
    assert 'network-snapshot-000000.ckpt.pt' in names and 'network-snapshot-000000.pkl' in names
    marker = tmp_path / 'unpickled'
    booby_trap(os.path.join(first, 'network-snapshot-000000.pkl'), marker)
    booby_trap(os.path.join(first, 'network-snapshot-000001.pkl'), marker)   # newer, no checkpoint
    capsys.readouterr()
    training_loop.training_loop(run_dir=str(tmp_path / 'B'), resume_pkl=first, **tiny_kwargs(data16,
                                                                                              total_kimg=0.016))
    out = capsys.readouterr().out
    assert 'Resuming exactly from' in out and 'network-snapshot-000000' in out
    assert not marker.exists()
    # Networks only, asked for: the weights come from the checkpoint, still without unpickling.
    training_loop.training_loop(run_dir=str(tmp_path / 'C'), resume_pkl=first, resume_mode='networks',
                                **tiny_kwargs(data16, total_kimg=0.004))
    out = capsys.readouterr().out
    assert 'Resuming networks only from' in out and 'Resuming exactly' not in out
    assert not marker.exists()
    saved = torch.load(os.path.join(first, 'network-snapshot-000000.ckpt.pt'), weights_only=True)
    after = torch.load(os.path.join(tmp_path, 'C', 'network-snapshot-000000.ckpt.pt'), weights_only=True)
    assert after['progress']['cur_nimg'] == 4 and not torch.equal(saved['G']['mapping.fc0.weight'],
                                                                   after['G']['mapping.fc0.weight'])


def _fake_snapshot(folder, kimg, complete=True):
    os.makedirs(folder, exist_ok=True)
    pkl = os.path.join(folder, 'network-snapshot-{:06d}.pkl'.format(kimg))
    with open(pkl, 'wb') as f:
        f.write(b'x')
    if complete:
        with open(checkpoint.ckpt_path_for(pkl), 'wb') as f:
            f.write(b'x')
    return pkl


def test_resume_follows_resumed_runs_back_and_accepts_an_outdir(tmp_path):
    outdir = tmp_path / 'runs'
    good = _fake_snapshot(str(outdir / '00000-first'), 4)
    _fake_snapshot(str(outdir / '00000-first'), 8, complete=False)
    # A resumed run killed before its first snapshot: its folder still leads to the snapshot it came from.
    (outdir / '00001-resumed').mkdir()
    (outdir / '00001-resumed' / 'training_options.json').write_text(json.dumps(dict(resume_pkl=good)))
    (outdir / '00002-resumed-again').mkdir()
    (outdir / '00002-resumed-again' / 'training_options.json').write_text(
        json.dumps(dict(resume_pkl=str(outdir / '00001-resumed'))))
    (outdir / '00003-half-written').mkdir()     # E.g. a run that failed before training.
    for target in ('00001-resumed', '00002-resumed-again', ''):
        info = checkpoint.resolve_resume(str(outdir / target))
        assert info == dict(pkl=good, ckpt=checkpoint.ckpt_path_for(good), exact=True, kimg=4), target


def test_networks_only_resume_only_when_asked(tmp_path):
    upstream = tmp_path / 'upstream-run'
    newest = _fake_snapshot(str(upstream), 12, complete=False)
    _fake_snapshot(str(upstream), 4, complete=False)
    with pytest.raises(FileNotFoundError, match='--resume-mode=networks'):
        checkpoint.resolve_resume(str(upstream))
    info = checkpoint.resolve_resume(str(upstream), mode='networks')
    assert info.pkl == newest and not info.exact and info.ckpt is None
    assert not checkpoint.resolve_resume(newest).exact            # A bare pickle: upstream semantics.
    ours = tmp_path / 'ours'
    pkl = _fake_snapshot(str(ours), 4)
    info = checkpoint.resolve_resume(str(ours), mode='networks')
    assert info.pkl == pkl and info.ckpt == checkpoint.ckpt_path_for(pkl) and not info.exact


def test_resume_mode_flag_and_the_error_that_names_it(data16, tmp_path):
    from helpers import dry_run
    flags = _train_cmd(tmp_path / 'runs', data16)[6:]      # train.py's tiny-run flags, minus --outdir/--data
    opts, _, _ = dry_run(tmp_path / 'runs', data16, *flags)
    run = str(tmp_path / 'run')
    training_loop.training_loop(**E(opts, run_dir=run, total_kimg=0.004))     # A real snapshot to resume.
    pkl = os.path.join(run, 'network-snapshot-000000.pkl')
    opts, resolved, out = dry_run(tmp_path / 'runs', data16, *flags, '--resume', run, '--resume-mode=networks')
    assert resolved['resume']['exact'] is False and opts['resume_mode'] == 'networks'
    assert opts['resume_pkl'] == pkl and opts['ada_kimg'] == 100
    opts, resolved, _ = dry_run(tmp_path / 'runs', data16, *flags, '--resume', run)
    assert resolved['resume']['exact'] is True and 'resume_mode' not in opts
    options = dict(batch_size=4)
    ckpt = dict(options_json=checkpoint.options_json(dict(batch_size=8)), options_hash='0')
    with pytest.raises(ValueError, match='--resume-mode=networks'):
        checkpoint.check_options(ckpt, options, 'x.ckpt.pt')


def test_leftover_temporaries_are_removed_on_next_start(data16, tmp_path, capsys):
    outdir = tmp_path / 'runs'
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    old = outdir / '00000-old'
    old.mkdir(parents=True)
    stale = [old / 'network-snapshot-000004.pkl.tmp{}'.format(dead.pid),
             old / 'network-snapshot-000004.ckpt.pt.tmp{}'.format(dead.pid),
             old / 'fakes000004.png.tmp{}'.format(dead.pid)]
    live = old / 'network-snapshot-000008.pkl.tmp{}'.format(os.getpid())   # A writer still at work.
    for path in stale + [live]:
        path.write_bytes(b'partial')
    training_loop.training_loop(run_dir=str(outdir / '00001-new'), **tiny_kwargs(data16, total_kimg=0.004))
    assert not any(path.exists() for path in stale) and live.exists()
    assert 'Removed 3 temporary file(s)' in capsys.readouterr().out
    assert not [n for n in os.listdir(outdir / '00001-new') if '.tmp' in n]


# Item 3: divergence.

def test_divergence_stops_the_run_naming_phase_kimg_and_last_snapshot(data16, tmp_path):
    """A learning rate that blows up the first minibatch of a run started from a good snapshot's
    networks: the run stops at tick 0 naming the phases, kimg and that snapshot, writes no
    snapshot of its own, and its stats.jsonl is strict JSON (null where the losses were NaN)."""
    good = str(tmp_path / 'good')
    training_loop.training_loop(run_dir=good, **tiny_kwargs(data16, total_kimg=0.004))
    run_dir = str(tmp_path / 'run')
    wild = E(class_name='torch.optim.Adam', lr=1e30, betas=[0, 0.99], eps=1e-8)
    with pytest.raises(Exception) as caught:    # Before issue 12: trained on to the end, NaN and all.
        training_loop.training_loop(run_dir=run_dir, resume_pkl=good, resume_mode='networks',
                                    **tiny_kwargs(data16, G_opt_kwargs=wild, D_opt_kwargs=wild, total_kimg=0.2))
    from training.run_guard import TrainingDiverged
    assert isinstance(caught.value, TrainingDiverged), caught.value
    text = str(caught.value)
    assert 'diverged at kimg 0.004' in text and 'phase Dmain' in text and 'non-finite' in text
    assert os.path.join(good, 'network-snapshot-000000.ckpt.pt') in text     # The last good snapshot.
    stats = strict_lines(os.path.join(run_dir, 'stats.jsonl'))
    assert len(stats) == 1 and None in (stats[0]['Loss/G/loss']['mean'], stats[0]['Loss/D/loss']['mean'])
    assert not [n for n in os.listdir(run_dir) if n.startswith('network-snapshot-')]


def test_metric_lines_are_strict_json(tmp_path):
    from metrics import metric_main
    result = E(results=E(fid50k_full=float('nan')), metric='fid50k_full', total_time=1.0, total_time_str='1s',
               num_gpus=1)
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(tmp_path / 'network-snapshot.pkl'))
    (line,) = strict_lines(str(tmp_path / 'metric-fid50k_full.jsonl'))
    assert line['results'] == {'fid50k_full': None}


# Item 2: signals and launcher death (train.py in child processes).

def _train_cmd(outdir, data, *extra):
    return [sys.executable, os.path.join(HARNESS, 'train.py'), '--outdir', str(outdir), '--data', data,
            '--device=cpu', '--metrics=none', '--cbase=128', '--cmax=8', '--map-depth=1', '--batch=4',
            '--aug=noaug', '--workers=0', '--tick=0.004', '--snap=1000', '--seed=2'] + list(extra)


def _child_env():
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=HARNESS + os.pathsep + ROOT)


def _wait_for_ticks(outdir, count, proc, timeout=120):
    """Until some run folder's stats.jsonl has `count` lines."""
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, proc.communicate()[0]
        for root, _dirs, files in os.walk(outdir):
            if 'stats.jsonl' in files:
                with open(os.path.join(root, 'stats.jsonl')) as f:
                    if len(f.readlines()) >= count:
                        return root
        time.sleep(0.2)
    raise AssertionError('no training ticks within {} s'.format(timeout))


def test_sigterm_mid_tick_writes_a_snapshot_and_the_run_resumes_exactly(data16, tmp_path):
    """SIGTERM in the middle of a tick (the run writes no snapshots of its own): the minibatch
    ends, a snapshot and checkpoint are written, TrainingInterrupted says how to resume, and the
    resumed run ends bit for bit (tick count included) where an uninterrupted run ends."""
    calls = []

    def signal_after_tick_0(cur, total):
        calls.append(cur)
        if len(calls) == 2:     # Start, then tick 0 (one minibatch): the next one is mid-tick.
            os.kill(os.getpid(), signal.SIGTERM)

    def unhandled(signum, _frame):
        raise RuntimeError('SIGTERM was not handled by the training loop')

    stopped_dir = str(tmp_path / 'runs' / '00000-stopped')
    previous = signal.signal(signal.SIGTERM, unhandled)   # Before issue 12 it would end this process.
    try:
        with pytest.raises(Exception) as caught:
            training_loop.training_loop(run_dir=stopped_dir, progress_fn=signal_after_tick_0, **tiny_kwargs(
                data16, total_kimg=1, kimg_per_tick=0.016, network_snapshot_ticks=None))
    finally:
        signal.signal(signal.SIGTERM, previous)
    from training.run_guard import TrainingInterrupted
    assert isinstance(caught.value, TrainingInterrupted) and caught.value.exit_code == 128 + signal.SIGTERM
    assert 'Stopped by SIGTERM at kimg 0.008' in str(caught.value)
    assert '--resume={}'.format(tmp_path / 'runs') in str(caught.value)
    assert os.listdir(stopped_dir).count('network-snapshot-000000.ckpt.pt') == 1
    resumed, full = str(tmp_path / 'runs' / '00001-resumed'), str(tmp_path / 'full')
    training_loop.training_loop(run_dir=resumed, resume_pkl=str(tmp_path / 'runs'), **tiny_kwargs(
        data16, total_kimg=0.028, kimg_per_tick=0.016))
    training_loop.training_loop(run_dir=full, **tiny_kwargs(data16, total_kimg=0.028, kimg_per_tick=0.016))
    a, b = (checkpoint.load_checkpoint(checkpoint.ckpt_path_for(checkpoint.find_latest(d))) for d in (resumed, full))
    assert a['progress']['cur_nimg'] == b['progress']['cur_nimg'] == 28
    assert a['progress']['cur_tick'] == b['progress']['cur_tick'] == 3     # The stopped tick was not cut short.
    for key in ('G', 'D', 'G_ema', 'opt', 'latent_rng', 'ranks'):
        assert _same(a[key], b[key]), key


def test_train_py_exits_on_sigterm_with_the_resume_command(data16, tmp_path):
    outdir = tmp_path / 'runs'
    proc = subprocess.Popen(_train_cmd(outdir, data16, '--kimg=10'), env=_child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for_ticks(outdir, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert 'Stopped by SIGTERM' in out and '--resume={}'.format(outdir) in out
    resumed = subprocess.run(_train_cmd(outdir, data16, '--kimg=0.02', '--resume={}'.format(outdir)),
                             env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert resumed.returncode == 0 and 'Resuming exactly from' in resumed.stdout, resumed.stdout


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_a_second_signal_stops_at_once(tmp_path):
    script = ('import os, signal, sys, time\n'
              'sys.path.insert(0, {!r})\n'
              'from training import run_guard\n'
              'run_guard.REPEAT_GRACE_SEC = 0\n'
              'guard = run_guard.StopSignals().install()\n'
              'os.kill(os.getpid(), signal.SIGTERM)\n'
              'assert guard.signum == signal.SIGTERM\n'
              'os.kill(os.getpid(), signal.SIGTERM)\n'
              'time.sleep(30)\n').format(HARNESS)
    started = time.time()
    done = subprocess.run([sys.executable, '-c', script], env=_child_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60)
    assert done.returncode == -signal.SIGTERM and time.time() - started < 20, done.stdout
    assert done.stdout.count('SIGTERM received') == 1


@pytest.mark.slow
def test_ranks_exit_when_their_launcher_dies(data16, tmp_path):
    outdir = tmp_path / 'runs'
    # Started as a shell starts a background job (`train.py ... &`): SIGINT ignored, which the ranks
    # inherit, so the SIGINT that torch's spawn asks for at the launcher's death does not reach them.
    proc = subprocess.Popen(_train_cmd(outdir, data16, '--kimg=10', '--gpus=2'), env=_child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    ranks = []
    try:
        _wait_for_ticks(outdir, 1, proc, timeout=180)
        ranks = _children(proc.pid)     # The two ranks (and multiprocessing's resource tracker).
        assert len(ranks) >= 2
        proc.kill()
        proc.wait()
        end = time.time() + 30
        while time.time() < end and any(_alive(pid) for pid in ranks):
            time.sleep(0.5)
        assert not any(_alive(pid) for pid in ranks), 'ranks still training after their launcher died'
    finally:
        for pid in [proc.pid] + ranks:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _children(pid):
    found = []
    for name in os.listdir('/proc'):
        if name.isdigit():
            try:
                with open('/proc/{}/stat'.format(name)) as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(name))
    return found


def _alive(pid):
    try:
        with open('/proc/{}/stat'.format(pid)) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


@pytest.mark.cuda
def test_divergence_guard_adds_no_host_sync_per_step():
    """The per-step part of the guard stays on the GPU: CUDA's sync debug mode raises on any sync."""
    from training.run_guard import DivergenceGuard
    grads = [torch.randn(64, 64, device='cuda'), torch.full([8], float('nan'), device='cuda')]
    guard = DivergenceGuard(['Dmain'], torch.device('cuda'))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for _ in range(3):
            guard.note_gradients('Dmain', grads)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    problems = guard.problems({}, {})
    assert problems == ['phase Dmain: all 3 steps had non-finite gradients']
