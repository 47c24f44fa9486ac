"""From evaluations to results: per-run best/final values, mean and std per method, results.json/.md."""
import contextlib
import datetime
import os
import platform

from bench import compare_methods
from bench.comparison.common import write_json_atomic, write_text_atomic
from bench.comparison.confidence import SAMPLES as CONFIDENCE_SAMPLES, attach_confidence
from bench.comparison.evaluation import evaluated, higher_is_better, primary_key
from bench.comparison.grid import run_key
from bench.comparison.report import SAMPLES_FILE, draw_plots, draw_samples
from bench.comparison.stats import DIFFERS, kd_tests, mean_std


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
                       snapshots=snaps, error=entry.get('error'), reused_from=entry.get('reused_from'))
            if done:
                best = pick(snaps, key=lambda s: s['value'])
                last = snaps[-1]
                for what, snap in (('best', best), ('final', last)):
                    run[what] = dict(value=snap['value'], tick=snap['tick'], kimg=snap['kimg'],
                                     seconds=snap['seconds'], results=snap['results'], snapshot=snap['name'])
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


def add_confidence_means(summary):
    """Per method: mean and std over seeds of the confidence shares of the best and final snapshots."""
    for method, entry in summary['methods'].items():
        done = [r for r in summary['runs'] if r['method'] == method and 'confidence' in r.get('final', {})]
        entry['confidence'] = {}
        for what in ('best', 'final'):
            values = [r[what]['confidence'] for r in done]
            entry['confidence'][what] = dict(zip(('mean', 'std'), mean_std(values)), values=values)


def write_outputs(cfg, state, metric_key, detector_files, command, confidence_samples=CONFIDENCE_SAMPLES):
    """results.json, results.md, plots and samples from the state; the confidence shares of runs that
    have none cached yet are computed here (bench/comparison/confidence.py)."""
    summary = summarize(cfg, state, metric_key)
    confidence = attach_confidence(cfg, summary, detector_files, confidence_samples)
    if confidence['applies']:
        add_confidence_means(summary)
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
        samples=dict(file=SAMPLES_FILE, rows=sample_rows) if sample_rows else None, confidence=confidence,
        kd_tests=kd_tests(summary['methods'], compare_methods.KD_BASELINES, summary['higher_is_better']))
    write_json_atomic(os.path.join(cfg.outdir, 'results.json'), results)
    write_text_atomic(os.path.join(cfg.outdir, 'results.md'), markdown(cfg, results))
    return results


def fmt_share(stats):
    """A share (0..1) as a percentage, with its std over seeds when there is one."""
    if stats.get('mean') is None:
        return '–'
    if stats.get('std') is None:
        return '{:.1f} %'.format(100 * stats['mean'])
    return '{:.1f} ± {:.1f} %'.format(100 * stats['mean'], 100 * stats['std'])


def method_table(results, metric, secondary):
    """The per-method table: best and final metric (and its secondary results), confidence shares
    when the detector is a classifier, kimg and training time."""
    conf = results.get('confidence') or {}
    shares = bool(conf.get('applies'))
    conf_head = ' Best conf ≥ {t:g} | Final conf ≥ {t:g} |'.format(t=conf['threshold']) if shares else ''
    lines = ['| Method | Seeds | Best {m} | Final {m} |{sec}{conf} Final kimg | Training time (s) |'.format(
        m=metric, sec=''.join(' {} at best | Final {} |'.format(k, k) for k in secondary), conf=conf_head),
        '|---|---|---|---|' + '---|---|' * (len(secondary) + shares) + '---|---|']
    for method, summary in results['methods'].items():
        cells = [method, summary['n'], fmt_mean_std(summary['best']), fmt_mean_std(summary['final'])]
        for key in secondary:
            stats = summary['secondary'].get(key)
            cells += [fmt_mean_std(stats['best']), fmt_mean_std(stats['final'])] if stats else ['–', '–']
        if shares:
            cells += [fmt_share(summary['confidence']['best']), fmt_share(summary['confidence']['final'])]
        cells += [fmt(summary['final_kimg']), fmt(summary['final_seconds'])]
        lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    return lines


def confidence_note(results):
    conf = results.get('confidence')
    if not conf:
        return []
    if not conf['applies']:
        return ['Confidence share (samples the evaluator classifies with confidence ≥ {:g}): not computed, '
                '{}.'.format(conf['threshold'], conf['reason']), '']
    return ['Conf ≥ {t:g}: the share of {n} generated images (G_ema, z from seed {s}, the same for every run) whose '
            'top softmax probability under the detector\'s logits is ≥ {t:g}, at the best and the final '
            'snapshot; mean ± std over seeds.'.format(t=conf['threshold'], n=conf['samples'], s=conf['latent_seed']),
            '']


def kd_section(results, metric):
    """'KD against its baseline': Welch's test per KD row, final and best values."""
    tests = results.get('kd_tests') or []
    if not tests:
        return []
    better = 'higher' if results['config']['higher_is_better'] else 'lower'
    lines = ['## KD against its baseline', '',
             "Welch's t-test (two-sided, unequal variances) on the per-seed values, KD row minus baseline "
             "({} is better); the interval is the 95 % confidence interval of the difference of the means. "
             "'Within seed noise' means p ≥ 0.05: no difference shown, not that there is none.".format(better), '',
             '| KD row | Baseline | Compared | Seeds | Mean difference [95 % CI] | t | df | p | Verdict |',
             '|---|---|---|---|---|---|---|---|---|']
    for test in tests:
        for what in ('final', 'best'):
            r = test[what]
            diff = fmt(r['diff'])
            if r['ci']:
                diff += ' [{}, {}]'.format(fmt(r['ci'][0]), fmt(r['ci'][1]))
            verdict = r['verdict']
            if r['verdict'] == DIFFERS:
                verdict += ' (KD {})'.format('better' if r['kd_better'] else 'worse')
            numbers = ['–' if r[k] is None else '{:.3g}'.format(r[k]) for k in ('t', 'df', 'p')]
            lines.append('| ' + ' | '.join([test['method'], test['baseline'], '{} {}'.format(what, metric),
                                            '{} vs {}'.format(r['n_a'], r['n_b']), diff] + numbers + [verdict]) + ' |')
    return lines + ['']


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
             '- Command: `{}`'.format(results['command']), '']
    lines += method_table(results, metric, secondary)
    lines += ['', 'Best: the best snapshot of each run by {}; final: its last snapshot (at the budget){}. Mean ± '
              'sample standard deviation over seeds (no ± with one seed). Training time: train.py\'s '
              'Timing/total_sec at the final snapshot, mean over seeds.'.format(
                  metric, '; ' + ', '.join(secondary) + ' are taken at those same snapshots' if secondary else ''),
              '']
    lines += confidence_note(results)
    for plot in results['plots']:
        lines.append('![{}]({})'.format(plot['title'], plot['file']))
    if results.get('samples'):
        lines += ['', 'Samples of the final snapshot of each method\'s first seed (the same latents in every row):',
                  '', '![samples]({})'.format(results['samples']['file'])]
    lines += [''] + kd_section(results, metric)
    lines += runs_table(results)
    lines += ['', 'Flags per method (train.py\'s resolved options: `methods/<name>.dry-run.txt`):', '']
    for method, flags in cfg.methods.items():
        lines.append('- `{}`: `{}`'.format(method, ' '.join(flags)))
    return '\n'.join(lines) + '\n'


def runs_table(results):
    shares = bool((results.get('confidence') or {}).get('applies'))
    lines = ['## Runs', '', '| Method | Seed | Status | Snapshots | Best (kimg) | Final (kimg) |{} Folder |'.format(
        ' Conf best / final |' if shares else ''), '|---|---|---|---|---|---|' + '---|' * shares + '---|']
    for run in results['runs']:
        best = run.get('best')
        final = run.get('final')
        cells = [run['method'], run['seed'], run['status'], len(run['snapshots']),
                 '{} ({})'.format(fmt(best['value']), fmt(best['kimg'])) if best else '–',
                 '{} ({})'.format(fmt(final['value']), fmt(final['kimg'])) if final else '–']
        if shares:
            cells.append('{} / {}'.format(fmt_share(dict(mean=best.get('confidence'))),
                                          fmt_share(dict(mean=final.get('confidence')))) if final else '–')
        folder = run['run_dir'] + (' (trained in {})'.format(run['reused_from']) if run.get('reused_from') else '')
        lines.append('| ' + ' | '.join(str(c) for c in cells + [folder]) + ' |')
    return lines
