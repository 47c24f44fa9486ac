"""Early snapshots show what G learnt (issue 16, item 4): every backbone's default cfg lets G_ema
follow G during the first iterations (a ramp-up of the half-life, or BigGAN's copy of G before
its EMA starts), the published EMA holds once the ramp is over, and --ema-rampup=none turns the
ramp off. The cfgs of CONTRACT.md's table keep its ramp column."""
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch

import dnnlib
from helpers import dry_run, invoke_train
from kdgan_plugins import presets, registry
from training import shapes, training_loop

E = dnnlib.EasyDict
CONTRACT_NO_RAMP = ('stylegan2', 'paper256', 'paper512', 'paper1024')   # CONTRACT.md: ramp '-'
ITERATIONS = 96


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return shapes.materialize_builtin('builtin:shapes', str(tmp_path_factory.mktemp('data')), resolution=32,
                                      num_images=64)


def cfg_names():
    presets.register_all()
    return list(registry.BUILTIN_NAMES['cfg']) + sorted(registry.names('cfg'))


def ema_share_after(opts, iterations, start_nimg=0):
    """How far G_ema has moved from its start towards a G that stays put, after `iterations`
    minibatches of the loop's own _update_ema under the options `opts` (0: not at all, 1: all the way)."""
    run = E(cfg=E(ema_kimg=opts['ema_kimg'], ema_rampup=opts['ema_rampup'], batch_size=opts['batch_size'],
                  ema_start_kimg=opts.get('ema_start_kimg', 0)))
    one = dict(bias=False, dtype=torch.float64)
    state = E(cur_nimg=start_nimg, G=torch.nn.Linear(1, 1, **one), G_ema=torch.nn.Linear(1, 1, **one))
    with torch.no_grad():
        state.G.weight.fill_(1)
        state.G_ema.weight.fill_(0)
    for _ in range(iterations):
        training_loop._update_ema(run, state)
        state.cur_nimg += run.cfg.batch_size
    return state.G_ema.weight.item()


def check_published_after_ramp(opts):
    """From the end of the ramp on, one minibatch moves G_ema by exactly 1 - beta of the cfg's half-life."""
    ramp_end = opts['ema_kimg'] * 1000 / opts['ema_rampup']
    published = 0.5 ** (opts['batch_size'] / (opts['ema_kimg'] * 1000))
    for nimg in (ramp_end, 2 * ramp_end):
        assert ema_share_after(opts, 1, start_nimg=nimg) == pytest.approx(1 - published, rel=1e-9)
    assert ema_share_after(opts, 1, start_nimg=ramp_end / 2) > 1 - published   # still ramping: shorter
    return published


@pytest.mark.parametrize('cfg', cfg_names())
def test_default_g_ema_follows_g_early(tmp_path, folder, cfg):
    opts, _, out = dry_run(tmp_path, folder, f'--cfg={cfg}')
    if cfg in CONTRACT_NO_RAMP:
        assert opts['ema_rampup'] is None and 'no ramp-up' in out
        opts, _, out = dry_run(tmp_path, folder, f'--cfg={cfg}', '--ema-rampup=0.05')
        assert opts['ema_rampup'] == 0.05 and 'ramp-up 0.05' in out
    share = ema_share_after(opts, ITERATIONS)
    # Without a ramp the half-life is 5.5-1386 kimg: after 96 minibatches G_ema has moved 0-10 %.
    assert share > 0.8, (cfg, opts['ema_kimg'], opts['ema_rampup'], share)
    if opts['ema_rampup'] is not None:
        published = check_published_after_ramp(opts)
        if cfg.startswith('fastgan'):
            assert published == pytest.approx(presets.FASTGAN_EMA_BETA, abs=1e-7)   # 0.999 per step
    else:
        assert opts['ema_start_kimg'] > 0   # biggan_cifar: G_ema is a copy of G until its EMA starts


def test_ramp_off_and_values(tmp_path, folder):
    opts, _, out = dry_run(tmp_path / 'a', folder, '--cfg=fastgan', '--ema-rampup=none')
    assert opts['ema_rampup'] is None and 'no ramp-up' in out
    assert ema_share_after(opts, ITERATIONS) < 0.15   # what a short run showed before: ~90 % the initial G
    opts, _, _ = dry_run(tmp_path / 'b', folder, '--cfg=auto', '--ema-rampup=0.2')
    assert opts['ema_rampup'] == 0.2
    for bad, why in (('0', 'must be > 0'), ('-1', 'must be > 0'), ('often', 'not a number')):
        result = invoke_train('--outdir', tmp_path / 'c', '--data', folder, '--metrics=none', '--device=cpu',
                              '--dry-run', f'--ema-rampup={bad}')
        assert result.exit_code == 2 and why in result.output and '--ema-rampup' in result.output


def grid_images(run_dir, name):
    """A grid PNG of the run as float pixels [H, W, C]."""
    return np.asarray(PIL.Image.open(os.path.join(run_dir, name)), dtype=np.float64)


def test_short_fastgan_run_shows_what_g_learnt(tmp_path, folder):
    """64 iterations of a tiny FastGAN from the default cfg: the last G_ema grid is close to what G
    itself draws for the same latents (closer than G's pictures are to their mean), as lively as
    G's, and unlike the initial G_ema (fakes_init.png)."""
    import train
    _, args, _, _, _ = train.setup_training_loop_kwargs(
        data=folder, cfg='fastgan', ngf=8, ndf=8, recon='mse', batch=4, kimg=0.256,
        tick=1000, snap=1000, grid=4, metrics=(), device='cpu', workers=0)
    run_dir = str(tmp_path / 'run')
    training_loop.training_loop(run_dir=run_dir, **args)
    ema_first = grid_images(run_dir, 'fakes_init.png')
    last = sorted(name for name in os.listdir(run_dir) if name.startswith('fakes') and name != 'fakes_init.png')
    ema_last = grid_images(run_dir, last[-1])
    with open(os.path.join(run_dir, sorted(n for n in os.listdir(run_dir) if n.endswith('.pkl'))[-1]), 'rb') as f:
        G = pickle.load(f)['G']
    # The grid's latents, as the loop draws them (seeded with random_seed, constant noise).
    z = torch.randn([16, G.z_dim], generator=torch.Generator().manual_seed(args.random_seed))
    with torch.no_grad():
        drawn = G(z, torch.zeros([16, G.c_dim]), noise_mode='const').numpy()
    training_loop.save_image_grid(drawn, str(tmp_path / 'G.png'), drange=[-1, 1], grid_size=(4, 4))
    g_last = grid_images(tmp_path, 'G.png')
    # Without the ramp (G_ema ~90 % the initial G) these were 50, 46 and 33 vs 49; with it 14, 46, 47 vs 49.
    caught_up = np.abs(ema_last - g_last).mean()
    spread = np.abs(drawn - drawn.mean(0, keepdims=True)).mean() * 127.5   # how much G's pictures differ
    assert caught_up < 0.5 * spread, (caught_up, spread)
    assert ema_last.std() > 0.8 * g_last.std(), (ema_last.std(), g_last.std())   # not uniform grey
    assert np.abs(ema_last - ema_first).mean() > 0.5 * spread   # and not the initial G_ema either
