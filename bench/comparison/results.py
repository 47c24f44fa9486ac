"""From evaluations to results: per-run best/final values, mean and std per method, results.json/.md."""
import contextlib
import datetime
import math
import os
import platform

from bench.comparison.common import write_json_atomic, write_text_atomic
from bench.comparison.evaluation import evaluated, higher_is_better, primary_key
from bench.comparison.grid import run_key
from bench.comparison.report import SAMPLES_FILE, draw_plots, draw_samples


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
