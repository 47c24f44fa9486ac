"""One comparison from start to end: check settings, train what is missing, evaluate, write results."""
import json
import os
import shlex
import threading
import time

from bench.comparison.common import CompareError, RunFailed, say
from bench.comparison.evaluation import Evaluator, evaluated, metric_identity, primary_value
from bench.comparison.grid import run_key
from bench.comparison.results import fmt, write_outputs
from bench.comparison.reuse import adopt_runs
from bench.comparison.runner import (State, check_method_files, dry_run, outdir_lock, run_spec, train_command,
                                     train_run)
from bench.comparison.snapshots import list_segments


def _interrupt(signum, frame):
    del frame
    raise KeyboardInterrupt('signal {}'.format(signum))


def compare(cfg, command):
    os.makedirs(cfg.outdir, exist_ok=True)
    with outdir_lock(cfg.outdir):
        return _compare_locked(cfg, command)


def never_started(cfg, entry):
    """True for a run that trained nothing: no snapshot kept and no tick logged in any session folder
    (train.py failed at once, or the runner stopped before it began)."""
    if entry.get('status') in ('trained', 'finished') or entry.get('snapshots'):
        return False
    segments = list_segments(cfg.run_dir(entry['method'], entry['seed'], 'train'))
    return not any(seg.read() or any(n.endswith('.ckpt.pt') for n in os.listdir(seg.path)) for seg in segments)


def _check_settings(cfg, state, grid):
    """An existing outdir keeps the settings it trained with (runs that never started excepted); dry-run
    the flags of what is left to train and find every file those methods need."""
    for method, seed in grid:
        key = run_key(method, seed)
        entry = state.runs.get(key)
        spec = run_spec(cfg, method, seed)
        if entry is not None and entry.get('spec') != spec and never_started(cfg, entry):
            say('[compare] {} seed {} never started; it will train with the new settings'.format(method, seed))
            del state.runs[key]
            state.save()
        elif entry is not None and entry.get('spec') != spec:
            raise CompareError('{} already holds {} seed {} trained with other settings:\n  was: {}\n  now: {}\n'
                               'use another --outdir (or the same settings)'.format(
                                   cfg.outdir, method, seed, json.dumps(entry.get('spec')), json.dumps(spec)))
    todo = [(m, s) for m, s in grid if state.runs.get(run_key(m, s), {}).get('status') not in ('finished', 'trained')]
    for method in dict.fromkeys(m for m, _ in todo):
        say('[compare] checking the flags of {} (train.py --dry-run) and the files its loss needs'.format(method))
        for line in check_method_files(cfg, method, dry_run(cfg, method)):
            say('  [{}] {}'.format(method, line))


class _Shared:
    """What the runs of one comparison share. With --jobs=N the same per-run body runs in N worker
    threads: `state_lock` guards the state (its dicts, state.json, results), `torch_lock` keeps the
    in-process work (evaluation, sample grid) to one thread; always taken in that order."""

    def __init__(self, cfg, command, state, metric_key, detector_files, grid):
        self.cfg, self.command, self.state, self.grid = cfg, command, state, grid
        self.metric_key, self.detector_files = metric_key, detector_files
        self.state_lock, self.torch_lock = threading.Lock(), threading.Lock()
        self.stop = threading.Event()     # set by the main thread on Ctrl-C/SIGTERM (parallel path only)
        self.evaluator = None
        self.failures = []                # (grid number, label) of runs whose train.py failed
        self.errors = []                  # unexpected exceptions of worker threads


def _train(sh, entry, method, seed, label, head):
    """Train one run to its budget; False when train.py failed (recorded in the state)."""
    cfg = sh.cfg
    start = time.time()
    say('{}: start'.format(head))
    with sh.state_lock:
        entry['status'] = 'training'
        entry.pop('error', None)
        sh.state.save()
    try:
        snaps, final, segments = train_run(cfg, method, seed, label, cfg.run_dir(method, seed, 'train.log'),
                                           stop=sh.stop)
    except RunFailed as err:
        with sh.state_lock:
            entry['status'] = 'failed'
            entry['error'] = str(err)
            sh.state.save()
        say('{}: FAILED: {}'.format(head, err))
        return False
    with sh.state_lock:
        entry['snapshots'] = snaps[:final + 1]
        entry['sessions'] = [os.path.relpath(seg.path, cfg.outdir) for seg in segments if seg.ticks]
        entry['train_command'] = ' '.join(shlex.quote(a) for a in train_command(cfg, method, seed))
        entry['status'] = 'trained'
        sh.state.save()
    final_snap = entry['snapshots'][-1]
    say('{}: trained to kimg {:.3f} in {:.1f} s of training ({} snapshots; {:.1f} s here)'.format(
        head, final_snap['kimg'], final_snap['seconds'], len(entry['snapshots']), time.time() - start))
    return True


def _evaluate(sh, entry, evals, method, seed, label):
    """Every snapshot of the run not yet evaluated (the caller holds torch_lock)."""
    cfg = sh.cfg
    snap_dir = cfg.run_dir(method, seed, 'snapshots')
    for snap in evaluated(cfg, entry['snapshots']):
        if snap['name'] in evals:
            continue
        if sh.stop.is_set():
            raise KeyboardInterrupt('stopped with the comparison')
        result = sh.evaluator(os.path.join(snap_dir, snap['name']))
        value = primary_value(cfg.metric, result.results)
        with sh.state_lock:
            evals[snap['name']] = dict(value=value, results=dict(result.results), seconds=result.total_time)
            sh.state.save()
        say('  [{}] {} at tick {} kimg {:.3f}: {:.6g} ({:.1f} s)'.format(
            label, cfg.metric, snap['tick'], snap['kimg'], value, result.total_time))


def _run_one(sh, number, method, seed):
    """One (method, seed) of the grid: skip it if done, else train what is missing, evaluate, write results."""
    cfg, key = sh.cfg, run_key(method, seed)
    label = '{} seed {}'.format(method, seed)
    head = '[compare] run {}/{} {}'.format(number, len(sh.grid), label)
    with sh.state_lock:
        entry = sh.state.runs.setdefault(key, dict(method=method, seed=seed, spec=run_spec(cfg, method, seed),
                                                   status='pending', evals={}))
        evals = entry.setdefault('evals', {}).setdefault(sh.metric_key, {})
        done = entry['status'] == 'finished' and all(s['name'] in evals for s in evaluated(cfg, entry['snapshots']))
    if done:
        say('{}: finished earlier; skipped'.format(head))
        return
    if entry['status'] not in ('trained', 'finished') and not _train(sh, entry, method, seed, label, head):
        with sh.state_lock:
            sh.failures.append((number, label))
        return
    with sh.torch_lock:
        sh.evaluator = sh.evaluator or Evaluator(cfg)
        _evaluate(sh, entry, evals, method, seed, label)
        with sh.state_lock:
            entry['status'] = 'finished'
            sh.state.save()
            results = write_outputs(cfg, sh.state, sh.metric_key, sh.detector_files, sh.command)
    run = next(r for r in results['runs'] if r['method'] == method and r['seed'] == seed)
    say('{}: done; best {} at kimg {:.3f}, final {}'.format(
        head, fmt(run['best']['value']), run['best']['kimg'], fmt(run['final']['value'])))


def _worker(sh, todo):
    """A worker thread of --jobs: takes the next run in grid order until none is left or the comparison stops."""
    while not sh.stop.is_set():
        with sh.state_lock:
            if not todo:
                return
            number, (method, seed) = todo.pop(0)
        try:
            _run_one(sh, number, method, seed)
        except KeyboardInterrupt:     # raised here only when sh.stop is set: the main thread says why
            return
        except Exception as err:      # a bug, not a failed train.py: stop the others; the main thread re-raises it
            sh.errors.append(err)
            sh.stop.set()
            return


def _run_parallel(sh, jobs):
    """`jobs` workers over the grid; Ctrl-C/SIGTERM (seen by this, the main thread) stops every run's
    train.py through sh.stop, then is raised again once the workers have ended."""
    todo = list(enumerate(sh.grid, 1))
    threads = [threading.Thread(target=_worker, args=(sh, todo), name='compare-job{}'.format(i))
               for i in range(min(jobs, len(todo)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():      # short joins: the signal handler gets its turn
                thread.join(0.5)
    except KeyboardInterrupt:
        say('[compare] stopping the runs in progress')
        sh.stop.set()
        for thread in threads:
            thread.join()
        raise
    if sh.errors:
        raise sh.errors[0]


def _compare_locked(cfg, command):
    state = State(os.path.join(cfg.outdir, 'state.json'))
    metric_key, detector_files = metric_identity(cfg)
    grid = [(m, s) for m in cfg.methods for s in cfg.seeds]
    adopt_runs(cfg, state, grid, getattr(cfg, 'reuse', None) or [], metric_key)
    _check_settings(cfg, state, grid)

    sh = _Shared(cfg, command, state, metric_key, detector_files, grid)
    jobs = getattr(cfg, 'jobs', 1) or 1
    if jobs > 1:
        _run_parallel(sh, jobs)
    else:
        for number, (method, seed) in enumerate(grid, 1):
            _run_one(sh, number, method, seed)

    results = write_outputs(cfg, state, metric_key, detector_files, command)
    say('[compare] wrote {}, {} and {}'.format(
        os.path.join(cfg.outdir, 'results.json'), os.path.join(cfg.outdir, 'results.md'),
        ', '.join(os.path.join(cfg.outdir, p['file']) for p in results['plots']) or 'no plots'))
    if sh.failures:
        failures = [label for _, label in sorted(sh.failures)]
        raise CompareError('{} run(s) failed: {}; see their train.log; re-run the same command to retry'.format(
            len(failures), ', '.join(failures)))
    return results
