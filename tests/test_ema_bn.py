"""G_ema's batch-norm statistics (issue 15, item 5): `ema_bn` = recompute | copy | batch.

Each choice does what it says on a bare FastGAN generator and through the training loop (grids,
snapshot pickles, weights-only model files), the recorded choice survives pickling and rebuilding,
networks recorded before the option keep running statistics, and StyleGAN2 is left alone.
"""
import copy
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch

import legacy
from helpers import dry_run, one_thread  # noqa: F401  (module fixture: one torch thread)
from kdgan_plugins import presets
from kdgan_plugins.networks import fastgan
from training import config, model_file, shapes, training_loop

Z_DIM = 16


def make_G(c_dim=0, seed=0, **kwargs):
    torch.manual_seed(seed)
    return fastgan.Generator(z_dim=Z_DIM, c_dim=c_dim, img_resolution=32, img_channels=1, ngf=4, **kwargs)


def bns(G):
    return [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def running(G):
    return [torch.cat([bn.running_mean, bn.running_var]).clone() for bn in bns(G)]


def latents(n=8, seed=5):
    return torch.randn([n, Z_DIM], generator=torch.Generator().manual_seed(seed))


def labels(n, c_dim, seed=3):
    if c_dim == 0:
        return None
    idx = torch.randint(c_dim, [n], generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(idx, c_dim).float()


def trained_like(G, seed=1):
    """G after a few train-mode forwards (its running statistics move off 0/1) and a weight nudge
    (as G_ema's averaged weights differ from G's), so every choice gives different pictures."""
    with torch.no_grad():
        G.train()
        for i in range(4):
            G(latents(16, seed + i), labels(16, G.c_dim, seed + i), noise_mode='const')
        G.eval()
        gen = torch.Generator().manual_seed(seed)
        for p in G.parameters():
            p.add_(0.3 * p.abs().mean() * torch.randn(p.shape, generator=gen))
    return G


@torch.no_grad()
def with_batch_statistics(G, z, c=None):
    """The reference for 'batch': G in eval mode except its batch norms, which normalise with the
    batch's statistics (the official evaluation, G sampled in train mode), buffers put back after."""
    G = copy.deepcopy(G).eval()
    for bn in bns(G):
        bn.train()
    return G(z, c, noise_mode='const')


# The network: eval_bn and recompute_bn_stats.

def test_batch_evaluates_with_the_batch_statistics_and_leaves_the_buffers():
    G = trained_like(make_G())
    before = running(G)
    rng = torch.get_rng_state()
    B = G.with_eval_bn('batch').eval()
    assert torch.equal(torch.get_rng_state(), rng)   # building it drew nothing from the global stream
    assert B.init_kwargs.eval_bn == 'batch' and 'eval_bn' not in G.init_kwargs
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(B.state_dict().items(), G.state_dict().items()))
    z = latents()
    with torch.no_grad():
        out = B(z, None, noise_mode='const')
        first = B(z[:4], None, noise_mode='const')
        eval_out = G(z, None, noise_mode='const')
    assert torch.allclose(out, with_batch_statistics(G, z), atol=1e-6)
    assert not torch.allclose(out, eval_out, atol=1e-3)           # running statistics give other pictures
    assert not torch.allclose(first, out[:4], atol=1e-4)          # and with batch ones, batch mates matter
    assert all(torch.equal(a, b) for a, b in zip(running(B), before))   # eval never touches the buffers
    assert G.with_eval_bn('running') is G


def test_batch_training_mode_is_unchanged():
    """In train mode eval_bn changes nothing: the same outputs and the same running-statistic updates."""
    G = make_G().train()
    B = copy.deepcopy(G).with_eval_bn('batch').train()
    z = latents()
    with torch.no_grad():
        assert torch.equal(G(z, None, noise_mode='const'), B(z, None, noise_mode='const'))
    assert all(torch.equal(a, b) for a, b in zip(running(G), running(B)))


@pytest.mark.parametrize('c_dim', [0, 3])
def test_recompute_gives_the_networks_own_statistics(c_dim):
    """After recompute_bn_stats each running mean/var is the average, over its 32 batches, of the
    batch statistics that layer sees in this very network: checked against hooks on a fresh pass
    over the same latents. Copied statistics (another network's) are gone."""
    G_ema = trained_like(make_G(c_dim=c_dim))
    other = trained_like(make_G(c_dim=c_dim, seed=7), seed=9)
    for mine, theirs in zip(bns(G_ema), bns(other)):   # what 'copy' leaves in G_ema: G's buffers
        mine.running_mean.copy_(theirs.running_mean)
        mine.running_var.copy_(theirs.running_var)
    copied = running(G_ema)
    rng = torch.get_rng_state()
    G_ema.recompute_bn_stats(num_batches=4, batch_size=8)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not G_ema.training and all(not bn.training for bn in bns(G_ema))

    # Replay: the same seeded draws, batch-statistics forward, averaging what each layer saw.
    seen = {bn: [] for bn in bns(G_ema)}
    gen = torch.Generator().manual_seed(0)
    probe = copy.deepcopy(G_ema)
    hooks = [bn.register_forward_hook(lambda m, inp, out, twin=twin: seen[twin].append(inp[0].detach()))
              for bn, twin in zip(bns(probe), bns(G_ema))]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        for bn in bns(probe):
            bn.train()
        for _ in range(4):
            z = torch.randn([8, Z_DIM], generator=gen)
            c = None
            if c_dim:
                idx = torch.randint(c_dim, [8], generator=gen)
                c = torch.nn.functional.one_hot(idx, c_dim).float()
            probe(z, c, noise_mode='random')
    for h in hooks:
        h.remove()
    for bn in bns(G_ema):
        means = torch.stack([x.mean([0, 2, 3]) for x in seen[bn]])
        variances = torch.stack([x.var([0, 2, 3], unbiased=True) for x in seen[bn]])
        assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5, rtol=1e-4)
        assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-5, rtol=1e-4)
    assert not all(torch.allclose(a, b, atol=1e-3) for a, b in zip(running(G_ema), copied))


def test_eval_bn_checks_its_value():
    with pytest.raises(ValueError, match='eval_bn must be one of running, batch'):
        make_G(eval_bn='train')


# Pickles, model files and networks recorded before the option.

def pictures(G, z):
    with torch.no_grad():
        return G.eval()(z, None, noise_mode='const')


def test_batch_survives_pickle_model_file_and_rebuild(tmp_path):
    G = trained_like(make_G())
    B = G.with_eval_bn('batch')
    z = latents()
    want = pictures(B, z)
    loaded = pickle.loads(pickle.dumps(B))
    assert loaded.eval_bn == 'batch' and torch.equal(pictures(loaded, z), want)
    snap = dict(G=G, D=None, G_ema=B, augment_pipe=None, training_set_kwargs=None)
    pkl = str(tmp_path / 'network-snapshot-000000.pkl')
    with open(pkl, 'wb') as f:
        pickle.dump(snap, f)
    model_file.save_model_file(model_file.model_path_for(pkl), snap)
    rebuilt = model_file.load_model_file(model_file.model_path_for(pkl))
    assert rebuilt['G_ema'].eval_bn == 'batch' and rebuilt['G'].eval_bn == 'running'
    assert torch.allclose(pictures(rebuilt['G_ema'], z), want, atol=1e-6)
    with open(pkl, 'rb') as f:
        via_legacy = legacy.load_network_pkl(f)
    assert torch.equal(pictures(via_legacy['G_ema'], z), want)
    import generate   # what generate.py renders: the pickle's (here: the model file's) G_ema
    G_gen = generate.load_generator(pkl, torch.device('cpu'))
    assert G_gen.eval_bn == 'batch'


def test_networks_recorded_before_the_option_keep_running_statistics():
    """A network built without eval_bn records none, and one unpickled from a state without the
    per-layer flag (older code) normalises with its running statistics, as before."""
    G = trained_like(make_G())
    assert 'eval_bn' not in G.init_kwargs and G.eval_bn == 'running'
    old = pickle.loads(pickle.dumps(G))
    for module in old.modules():
        if isinstance(module, fastgan.CondBatchNorm):
            del module.__dict__['eval_batch_stats']   # as in a pickle of the code before this option
    z = latents()
    assert torch.equal(pictures(old, z), pictures(G, z))
    with torch.no_grad():
        manual = copy.deepcopy(G).eval()(z, None, noise_mode='const')
    assert torch.equal(pictures(old, z), manual)


# The training loop: every place G_ema is drawn from.

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return shapes.materialize_builtin('builtin:shapes', str(tmp_path_factory.mktemp('data')), resolution=32,
                                      num_images=16)


def train_two_minibatches(folder, run_dir, ema_bn):
    import train
    _, args, _, _, _ = train.setup_training_loop_kwargs(
        data=folder, cfg='fastgan', ngf=4, ndf=4, recon='mse', batch=4, kimg=0.008, tick=1000, snap=1000,
        grid=2, metrics=(), device='cpu', workers=0, ema_bn=ema_bn)
    assert args.ema_bn == ema_bn
    training_loop.training_loop(run_dir=run_dir, **args)
    names = sorted(n for n in os.listdir(run_dir) if n.endswith('.pkl'))
    with open(os.path.join(run_dir, names[-1]), 'rb') as f:
        return args, pickle.load(f)


def png_pixels(path):
    return np.asarray(PIL.Image.open(path), dtype=np.float64)


def last_grid(run_dir):
    last = sorted(n for n in os.listdir(run_dir) if n.startswith('fakes') and n != 'fakes_init.png')[-1]
    return png_pixels(os.path.join(run_dir, last))


def drawn_grid(G, args, path):
    """The 2x2 grid the loop draws (its seeded latents, batch_gpu at a time, constant noise), from G."""
    z = torch.randn([4, G.z_dim], generator=torch.Generator().manual_seed(args.random_seed))
    with torch.no_grad():
        drawn = torch.cat([G(part, torch.zeros([part.shape[0], 0]), noise_mode='const')
                           for part in z.split(args.batch_gpu)]).numpy()
    training_loop.save_image_grid(drawn, path, drange=[-1, 1], grid_size=(2, 2))
    return png_pixels(path)


@pytest.mark.parametrize('ema_bn', config.EMA_BN_MODES)
def test_loop_applies_the_choice_to_grids_and_snapshots(tmp_path, folder, ema_bn):
    run_dir = str(tmp_path / 'run')
    args, snap = train_two_minibatches(folder, run_dir, ema_bn)
    G, G_ema = snap['G'], snap['G_ema']
    stats_G, stats_ema = running(G), running(G_ema)
    same_stats = all(torch.equal(a, b) for a, b in zip(stats_G, stats_ema))
    if ema_bn == 'copy':
        assert same_stats and G_ema.eval_bn == 'running'
    elif ema_bn == 'recompute':
        assert not same_stats and G_ema.eval_bn == 'running'
        again = copy.deepcopy(G_ema).recompute_bn_stats()   # already its own: recomputing changes nothing
        assert all(torch.equal(a, b) for a, b in zip(running(again), stats_ema))
    else:
        assert G_ema.eval_bn == 'batch' and G.eval_bn == 'running' and same_stats
        assert model_file.load_model_file(model_file.model_path_for(
            os.path.join(run_dir, sorted(n for n in os.listdir(run_dir) if n.endswith('.pkl'))[-1])))[
            'G_ema'].eval_bn == 'batch'
    # The grid of the same tick is the snapshot's G_ema's pictures.
    assert np.abs(last_grid(run_dir) - drawn_grid(G_ema.eval(), args, str(tmp_path / 'mine.png'))).max() <= 1


def test_dry_run_and_flag(tmp_path, folder):
    assert presets.loop_options('fastgan')['ema_bn'] == presets.FASTGAN_EMA_BN
    assert presets.FASTGAN_EMA_BN in config.EMA_BN_MODES
    options, _, text = dry_run(tmp_path, folder, '--cfg=fastgan', '--recon=mse', '--ema-bn=recompute')
    assert options['ema_bn'] == 'recompute' and 'batch norm: recompute' in text
    options, _, _ = dry_run(tmp_path, folder, '--cfg=fastgan_lite', '--recon=mse')
    assert options['ema_bn'] == presets.FASTGAN_EMA_BN


# StyleGAN2: no batch norm, nothing changes.

def test_stylegan2_is_unaffected(tmp_path, folder):
    import train
    _, args, _, _, _ = train.setup_training_loop_kwargs(data=folder, cfg='auto', metrics=(), device='cpu',
                                                        dry_run=True)
    assert 'ema_bn' not in args   # the loop's default, 'copy': G_ema's buffers are G's, as before
    assert training_loop.training_loop.__kwdefaults__['ema_bn'] == 'copy'
    with pytest.raises(config.Conflict, match='--ema-bn applies to cfgs'):
        config.resolve(config.Flags(data=folder, cfg='auto', metrics=(), device='cpu', dry_run=True,
                                    ema_bn='recompute'))
    from training import networks
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=1,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    for mode in ('recompute', 'batch'):
        with pytest.raises(ValueError, match=f"ema_bn='{mode}' needs a generator"):
            training_loop._check_ema_bn(mode, G)
