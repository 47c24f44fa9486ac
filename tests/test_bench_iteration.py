"""bench/bench_iteration.py at a tiny size: it runs, measures, and its ratio is the quotient of its figures."""

import json
import math
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'bench', 'bench_iteration.py')
TINY = ['--res=64', '--batch=2', '--warmup=0', '--iters=1', '--ngf=8', '--ndf=8', '--cbase=1024', '--cmax=32',
        '--device=cpu']


def _run(tmp_path, *extra):
    env = dict(os.environ, DNNLIB_CACHE_DIR=str(tmp_path / 'cache'), OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, SCRIPT, *TINY, *extra], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path), timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_bench_iteration_tiny(tmp_path):
    jsonl = tmp_path / 'bench.jsonl'
    stdout = _run(tmp_path, f'--json={jsonl}')

    # The record: one JSON line with machine, date, torch, load and both setups.
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    for key in ('date', 'cpu', 'cores', 'torch', 'load_avg_1_5_15', 'load_avg_after'):
        assert rec[key] not in (None, ''), key
    assert rec['res'] == 64 and rec['batch'] == 2 and rec['iters'] == 1

    fg, sg = rec['fastgan'], rec['stylegan2']
    assert fg['G'].endswith('fastgan.Generator') and fg['loss'].endswith('FastGANLoss')
    assert fg['augment'].endswith('DiffAugment') and 'recon' in fg['loss_terms']
    assert sg['G'] == 'training.networks.Generator' and sg['augment'] == 'training.augment.AugmentPipe'
    assert sg['augment_p'] == 0.2
    assert set(fg['phases']) == {'Gboth', 'Dboth'}
    assert set(sg['phases']) == {'Gmain', 'Greg', 'Dmain', 'Dreg'}
    assert sg['phases']['Greg']['interval'] == 4 and sg['phases']['Dreg']['interval'] == 16

    for r in (fg, sg):
        assert r['resolution'] == 64 and r['batch'] == 2 and r['timed_iters'] == 1
        for name, p in r['phases'].items():
            assert math.isfinite(p['sec']) and p['sec'] > 0, name
            assert math.isclose(p['amortised_sec'], p['sec'] / p['interval'], rel_tol=1e-12)
        assert r['ema_sec'] > 0
        # The iteration is its amortised phases plus the EMA update.
        parts = sum(p['amortised_sec'] for p in r['phases'].values()) + r['ema_sec']
        assert math.isclose(r['sec_per_iter'], parts, rel_tol=1e-9)
        assert math.isclose(r['it_per_sec'], 1 / r['sec_per_iter'], rel_tol=1e-9)
        assert r['peak_mem_gb'] is None  # CPU: no CUDA peak memory
        # Process CPU time: per phase and sample, and the iteration is its amortised phases plus EMA.
        for name, p in r['phases'].items():
            assert len(p['cpu_samples']) == 1 and p['cpu_sec'] > 0, name
            assert math.isclose(p['amortised_cpu_sec'], p['cpu_sec'] / p['interval'], rel_tol=1e-12)
        cpu_parts = sum(p['amortised_cpu_sec'] for p in r['phases'].values()) + r['ema_cpu_sec']
        assert math.isclose(r['cpu_sec_per_iter'], cpu_parts, rel_tol=1e-9)
    assert math.isclose(rec['ratio'], sg['sec_per_iter'] / fg['sec_per_iter'], rel_tol=1e-12)
    assert math.isclose(rec['ratio_cpu'], sg['cpu_sec_per_iter'] / fg['cpu_sec_per_iter'], rel_tol=1e-12)

    # The printed figures agree with the record (up to their printed rounding).
    printed = dict(re.findall(r'^(fastgan|stylegan2)\s+sec/iter ([0-9.]+)', stdout, re.M))
    assert float(printed['fastgan']) == round(fg['sec_per_iter'], 4)
    assert float(printed['stylegan2']) == round(sg['sec_per_iter'], 4)
    ratio = float(re.search(r'^ratio\s+([0-9.]+)', stdout, re.M).group(1))
    assert ratio == round(rec['ratio'], 4)
    assert float(re.search(r'^ratio CPU\s+([0-9.]+)', stdout, re.M).group(1)) == round(rec['ratio_cpu'], 4)
    assert abs(ratio - float(printed['stylegan2']) / float(printed['fastgan'])) < 1e-3 * max(ratio, 1)
    assert re.search(r'^Machine: .+, \d+ cores', stdout, re.M)
    assert 'load average' in stdout and 'torch ' in stdout


def test_bench_versus_previous_builds_both_fastgan_settings(tmp_path):
    """--versus=previous: the new defaults against the pre-issue-14 settings, interleaved in one run."""
    jsonl = tmp_path / 'bench.jsonl'
    stdout = _run(tmp_path, '--versus=previous', f'--json={jsonl}')
    rec = json.loads(jsonl.read_text())
    new, old = rec['fastgan'], rec['previous']
    assert rec['versus'] == 'previous' and rec['order'] == 'interleave'
    assert new['phase_order'] == ['Dboth', 'Gboth'] and old['phase_order'] == ['Gboth', 'Dboth']
    assert new['fake_reuse'] is True and old['fake_reuse'] is False and old['precision'] == 'fp32'
    assert new['up_conv'] == {'G': 'folded', 'D': 'folded'} and old['up_conv'] == {'G': 'nearest', 'D': 'nearest'}
    assert math.isclose(rec['ratio_cpu'], old['cpu_sec_per_iter'] / new['cpu_sec_per_iter'], rel_tol=1e-12)
    assert 'FastGAN previous settings' in stdout
