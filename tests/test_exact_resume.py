"""Exact resume across processes (issue 17, item 3): a two-process run (gloo ranks on the CPU,
set up as train.py --gpus=2 does) stopped at a tick and resumed in new processes from its
checkpoint ends bit for bit where one uninterrupted two-process run of the same length ends.

Every consumer of randomness is on (bgc augmentation with ADA moving p, noise inputs, style
mixing, path-length and R1 regularisation) and the stop falls where neither the lazy
regularisation nor the ADA interval lines up with the tick, so both ranks' random streams,
pl_mean, the ADA backlog, the optimisers and the data position all have to come back."""
import json
import os
import sys

import pytest
import torch

import dnnlib
from training import shapes, training_loop

E = dnnlib.EasyDict
RES = 16
STOP_NIMG, END_NIMG = 56, 80


def _kwargs(path, total_nimg):
    """A tiny StyleGAN2 + ADA run, 4 images per rank. Ticks end after minibatches 1, 4, 7, 10;
    the stop (minibatch 7) is between ADA updates (every 2nd) and reg steps (every 3rd/4th)."""
    bgc = E(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1,
            xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    return E(
        training_set_kwargs=E(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=False,
                              xflip=False),
        data_loader_kwargs=E(num_workers=0),
        G_kwargs=E(class_name='training.networks.Generator', z_dim=16, w_dim=16, mapping_kwargs=E(num_layers=1),
                   synthesis_kwargs=E(channel_base=256, channel_max=16)),
        D_kwargs=E(class_name='training.networks.Discriminator', channel_base=256, channel_max=16,
                   block_kwargs=E(), mapping_kwargs=E(), epilogue_kwargs=E(mbstd_group_size=4)),
        G_opt_kwargs=E(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=E(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8),
        loss_kwargs=E(class_name='training.loss.StyleGAN2Loss', r1_gamma=0.05, pl_weight=2, style_mixing_prob=0.9),
        augment_kwargs=bgc, augment_p=0.05, ada_target=-0.5, ada_interval=2, ada_kimg=0.5,
        G_reg_interval=3, D_reg_interval=4, random_seed=3, batch_size=8, batch_gpu=4, num_gpus=2,
        ema_kimg=0.05, ema_rampup=None, total_kimg=total_nimg / 1000, kimg_per_tick=0.024,
        image_snapshot_ticks=None, network_snapshot_ticks=1)


def _worker(rank, init_file, log_dir, jobs):
    """One rank: join the group as train.py's ranks do, then run each (run_dir, kwargs, resume) in turn."""
    sys.stdout = open(os.path.join(log_dir, 'stdout{}.txt'.format(rank)), 'a')
    torch.set_num_threads(1)
    from torch_utils import training_stats
    torch.distributed.init_process_group(backend='gloo', init_method='file://' + init_file, rank=rank, world_size=2)
    training_stats.init_multiprocessing(rank=rank, sync_device=torch.device('cpu'))
    try:
        for run_dir, kwargs, resume in jobs:
            training_loop.training_loop(run_dir=run_dir, rank=rank, device='cpu', resume_pkl=resume, **kwargs)
    finally:
        sys.stdout.flush()
        torch.distributed.destroy_process_group()


def _spawn(tmp_path, name, jobs):
    torch.multiprocessing.spawn(_worker, args=(str(tmp_path / ('init-' + name)), str(tmp_path), jobs), nprocs=2,
                                join=True)


def _final_ckpt(run_dir):
    from training import checkpoint   # Its newest snapshot (names no longer collide within a kimg).
    return torch.load(checkpoint.list_snapshots(run_dir, checkpoint.CKPT_SUFFIX)[-1], map_location='cpu',
                      weights_only=True)


def _ticks(run_dir):
    with open(os.path.join(run_dir, 'stats.jsonl'), encoding='utf-8') as f:
        return {int(e['Progress/tick']['mean']): e for e in map(json.loads, f)}


def _differences(a, b, where):
    """Every place where `a` and `b` are not identical (tensors: torch.equal), with the largest
    absolute difference, so that a failure says which tensors drift and by how much."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            return ['{}: {} vs {}'.format(where, a, b)]
        if torch.equal(a, b):
            return []
        gap = (a.double() - b.double()).abs().max().item() if a.is_floating_point() else 'n/a'
        return ['{}: max |diff| {}'.format(where, gap)]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return ['{}: keys {} vs {}'.format(where, sorted(a), sorted(b))]
        return [d for key in a for d in _differences(a[key], b[key], '{}.{}'.format(where, key))]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, '{}[{}]'.format(where, i))]
    return [] if a == b else ['{}: {!r} vs {!r}'.format(where, a, b)]


@pytest.mark.slow
def test_two_process_resume_equals_uninterrupted_run(tmp_path):
    data = shapes.materialize_builtin('builtin:shapes', str(tmp_path / 'data'), resolution=RES)
    full, first, resumed = (str(tmp_path / name) for name in ('full', 'first', 'resumed'))
    # The uninterrupted run first (fresh processes, like the resumed one), then the stopped one.
    _spawn(tmp_path, 'fresh', [(full, _kwargs(data, END_NIMG), None), (first, _kwargs(data, STOP_NIMG), None)])
    _spawn(tmp_path, 'resume', [(resumed, _kwargs(data, END_NIMG), first)])

    with open(str(tmp_path / 'stdout0.txt'), encoding='utf-8') as f:
        assert f.read().count('Resuming exactly from') == 1
    a, b, c = _final_ckpt(first), _final_ckpt(full), _final_ckpt(resumed)
    assert a['progress']['cur_nimg'] == STOP_NIMG and len(a['ranks']) == 2
    assert b['progress']['cur_nimg'] == c['progress']['cur_nimg'] == END_NIMG
    assert len({0.05, a['augment_p'], b['augment_p']}) == 3    # ADA moved p before and after the stop.
    assert float(a['ranks'][1]['loss']['pl_mean']) != 0         # The path-length mean is live state.

    # Everything but the wall-clock: G, D, G_ema, augment pipe, optimisers, ADA backlog, the
    # shared latent stream, the data position, both ranks' random streams and loss state.
    for ckpt in (b, c):
        del ckpt['progress']['elapsed_sec']
    assert _differences(b, c, 'ckpt') == []
    assert _differences(a['G'], b['G'], 'G')    # The networks moved after the stop.

    # The resumed session logs the full run's last tick: the same counts and means, bitwise.
    # The std alone may differ in the last bits: training_stats keeps float64 running totals
    # since process start and a tick's sum of squares is a difference of two of them.
    ticks_b, ticks_c = _ticks(full), _ticks(resumed)
    assert sorted(ticks_b) == [0, 1, 2, 3] and sorted(ticks_c) == [3]
    logged = [name for name in ticks_b[3] if name.startswith(('Loss/', 'Progress/'))]
    assert len([name for name in logged if name.startswith('Loss/')]) >= 5
    for name in logged:
        want, got = ticks_b[3][name], ticks_c[3][name]
        assert (got['num'], got['mean']) == (want['num'], want['mean']), name
        assert got['std'] == pytest.approx(want['std'], rel=1e-12, abs=1e-15), name
