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
network: any TorchScript file called as `det(images, return_features=True)`
-> [N, D] (`metrics.detectors.FEATURE_SIGNATURE`; e.g. the Fashion-MNIST
evaluator, bench/fmnist/evaluator.py), tried on two images before anything
runs; `--metric-module=MOD` imports a module that registers further metrics
with `metric_main.register_metric`.

Parallel runs: `--jobs=N` trains N (method, seed) runs at once, taken in grid
order as workers free up; each train.py child gets OMP_NUM_THREADS and
MKL_NUM_THREADS = max(1, usable cores // N) (an OMP_NUM_THREADS already set
wins). With small networks one process per core at one thread outruns one
process with all the threads. Evaluation stays in this process, one run at a
time; results, resuming and the outdir are the same as with --jobs=1 (the
default: one run after the other). A --budget preset may set `jobs` like its
other keys; --jobs on the command line wins.

Preflight, before the first run: every method's flags (train.py --dry-run)
and every file its loss needs (the VGG16 of FastGAN's --recon=lpips, the KD
teacher's weights), looked for as train.py will (--detector-dir is passed to
the runs as $KDGAN_DETECTOR_DIR). A run that never started (no tick logged)
does not tie the outdir to its settings: change them and run again.
"""
import os
import shlex
import signal
import sys

import click

if __package__ in (None, ''):  # run as a script: make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import compare_methods
from bench.comparison.common import RESERVED_FLAGS, ROOT, CompareError, RunFailed, say
from bench.comparison.evaluation import stage_detector
from bench.comparison.grid import (Config, _substitute, apply_extra_for, check_flags, parse_extra_for,
                                   parse_methods, parse_seeds, resolve_budget)
from bench.comparison.report import PALETTE
from bench.comparison.session import _interrupt, compare
from bench.comparison.snapshots import Segment, Tick, final_index, history

__all__ = ['main', 'compare', 'compare_methods', 'CompareError', 'RunFailed', 'RESERVED_FLAGS', 'PALETTE', 'Config',
           'Segment', 'Tick', 'history', 'final_index', 'parse_methods', 'parse_seeds', 'parse_extra_for',
           'apply_extra_for', 'resolve_budget', '_substitute']


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
@click.option('--detector', help='Another feature network for FID/KID/IS instead of Inception: a TorchScript '
              'file called as det(images, return_features=True) (README, "Evaluating offline")', metavar='FILE')
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
@click.option('--jobs', help='Runs that train at the same time, each train.py with OMP/MKL_NUM_THREADS = usable '
              'cores // JOBS unless OMP_NUM_THREADS is set [default: 1]', type=click.IntRange(min=1), metavar='INT')
@click.option('--reuse', help='Another comparison outdir whose finished runs of the same method, seed, settings '
              'and data are taken instead of trained again (may be repeated)', multiple=True, metavar='DIR')
@click.option('--budget', help='A preset from bench/compare_methods.py BUDGETS: cpu or gpu (the Fashion-MNIST '
              'reproduction); explicit options win',
              metavar='NAME')
@click.option('--list-methods', help='Print the method table and exit', is_flag=True, expose_value=False,
              is_eager=True, callback=_list_methods)
def main(outdir, data, eval_data, methods_text, seeds, kimg, minutes, snap, tick, metric, better, detector_dir,
         detector, metric_module, skip_start, extra, extra_for, device, jobs, reuse, budget):
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
                 extra=list(extra) or None, extra_for=list(extra_for) or None, device=device, skip_start=skip_start,
                 jobs=jobs, reuse=list(reuse) or None)
    if budget is not None:
        for key, value in resolve_budget(budget, os.path.abspath(os.path.expanduser(outdir)), set(given)).items():
            if given[key] is None:
                given[key] = value
    if given['data'] is None:
        raise click.UsageError("Missing option '--data'")
    if given['jobs'] is not None and (not isinstance(given['jobs'], int) or given['jobs'] < 1):
        raise CompareError('jobs: expected a whole number >= 1 (runs training at once); got {!r}'.format(given['jobs']))
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
        detector_dir = stage_detector(outdir, given['detector'], detector_dir, given['metric'])
    cfg = Config(outdir=outdir, data=given['data'], eval_data=given['eval_data'] or given['data'],
                 methods=apply_extra_for(parse_methods(methods if isinstance(methods, list) else [methods]),
                                         extra_for_flags),
                 seeds=parse_seeds(given['seeds'] if given['seeds'] is not None else '0'),
                 kimg=given['kimg'], minutes=given['minutes'], snap=given['snap'] or 10, tick=given['tick'],
                 metric=given['metric'] or 'fid5k_full', better=better, detector_dir=detector_dir,
                 extra=extra_flags, device=given['device'] or 'auto', budget=budget,
                 skip_start=bool(given['skip_start']), jobs=given['jobs'] or 1,
                 reuse=[os.path.abspath(os.path.expanduser(d)) for d in given['reuse'] or []])
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
