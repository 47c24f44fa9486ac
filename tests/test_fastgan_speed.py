"""Issue 14, items 1-2: FastGAN configurations that cost what they should, and the CPU speed options.

- D's reconstruction decoders follow ndf (decoder_widths='ndf'), giving exactly the official
  widths and parameter counts at ndf = 64; 'fixed' (the constructor default, for networks that
  recorded no such argument) keeps the old widths at every ndf.
- FastGAN at 32x32 and single-channel data, for FastGAN and StyleGAN2, through a loss step.
- The folded up-convolution computes the reference's linear map (forward and gradients).
- Fake reuse: one G forward per minibatch, D's phases first; G learns through the updated D.
- bf16 autocast stays within bf16 rounding of fp32; fp32 never enters autocast.
"""

import pytest
import torch

import dnnlib
from training import networks
from training.loss import StyleGAN2Loss, resolve_precision

from kdgan_plugins import presets
from kdgan_plugins.augment.diffaugment import DiffAugment
from kdgan_plugins.losses.fastgan_loss import FastGANLoss
from kdgan_plugins.networks import fastgan
from helpers import torch_threads

MSE = {'recon': {'class_name': 'kdgan_plugins.losses.terms.Reconstruction', 'kind': 'mse'}}


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def count(module):
    return sum(p.numel() for p in module.parameters())


def decoder_widths_of(D):
    return [[block.conv1.out_channels // 2 for block in dec.blocks]
            for dec in (D.decoder_big, D.decoder_small, D.decoder_part)]


# Decoder widths.


def test_decoder_rule_is_official_at_ndf_64_and_scales_below():
    assert fastgan.decoder_channels(64, 'ndf') == fastgan.decoder_channels(64, 'fixed') == {16: 128, 32: 64, 64: 64,
                                                                                          128: 32}
    assert fastgan.decoder_channels(8, 'ndf') == {16: 16, 32: 8, 64: 8, 128: 4}
    assert fastgan.decoder_channels(8, 'fixed') == {16: 128, 32: 64, 64: 64, 128: 32}
    with pytest.raises(ValueError, match='decoder_widths'):
        fastgan.Discriminator(img_resolution=64, ndf=8, decoder_widths='wide')


@pytest.mark.parametrize('res, d_params', [(256, 11_526_160), (512, 11_526_496), (1024, 11_528_192)])
def test_preset_discriminator_keeps_official_counts_at_ndf_64(res, d_params):
    """The cfg's D kwargs (decoder_widths='ndf', folded up-convs) build the official network at ndf = 64."""
    kwargs = {k: v for k, v in presets.PRESETS[('cfg', 'fastgan')]['D_kwargs'].items() if k != 'class_name'}
    assert kwargs['decoder_widths'] == 'ndf' and kwargs['ndf'] == 64
    D = fastgan.Discriminator(c_dim=0, img_resolution=res, img_channels=3, **kwargs)
    old = fastgan.Discriminator(c_dim=0, img_resolution=res, img_channels=3, ndf=64)
    assert count(D) == count(old) == d_params
    assert decoder_widths_of(D) == decoder_widths_of(old) == [[128, 64, 64, 32]] * 3


def test_narrow_discriminator_has_narrow_decoders():
    new = fastgan.Discriminator(img_resolution=64, ndf=8, decoder_widths='ndf')
    old = fastgan.Discriminator(img_resolution=64, ndf=8)       # what a recorded D without the option rebuilds
    assert decoder_widths_of(new) == [[16, 8, 8]] * 3 and decoder_widths_of(old) == [[128, 64, 64]] * 3
    assert count(new) < count(old) / 5
    # Only the decoders differ: every other parameter has the same name and shape.
    shapes_new = {k: v.shape for k, v in new.state_dict().items() if not k.startswith('decoder_')}
    shapes_old = {k: v.shape for k, v in old.state_dict().items() if not k.startswith('decoder_')}
    assert shapes_new == shapes_old


# 32x32 and one channel.


def _step(loss, G, D, channels, res, z_dim, phases=('Dboth', 'Gboth')):
    real = torch.rand([2, channels, res, res]) * 2 - 1
    c = torch.zeros([2, 0])
    for phase in phases:
        net = D if phase.startswith('D') else G
        net.requires_grad_(True)
        loss.accumulate_gradients(phase, real, c, torch.randn([2, z_dim]), c, sync=True, gain=1)
        net.requires_grad_(False)


@pytest.mark.parametrize('res, channels', [(32, 1), (32, 3), (64, 1)])
def test_fastgan_small_and_grayscale_train(res, channels):
    torch.manual_seed(0)
    G = fastgan.Generator(z_dim=16, img_resolution=res, img_channels=channels, ngf=4, up_conv='folded').train()
    D = fastgan.Discriminator(img_resolution=res, img_channels=channels, ndf=4, decoder_widths='ndf').train()
    G.requires_grad_(False)
    D.requires_grad_(False)
    img, aux = G.synthesis(G.mapping(torch.randn([2, 16]), None), return_aux=True)
    assert img.shape == (2, channels, res, res) and aux.shape == (2, channels, min(res, 128), min(res, 128))
    logits, rec = D(img, None, img_small=aux, recon=True)
    assert logits.shape == (2, 50) and rec['big'].shape == (2, channels, res, res)
    loss = FastGANLoss('cpu', G.mapping, G.synthesis, D, augment_pipe=DiffAugment(policy='color,translation,cutout'),
                       terms=MSE)
    _step(loss, G, D, channels, res, 16)
    for net in (G, D):
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    if res == 32:
        assert G.synthesis.sle_sizes == [] and D.sle_sources == []   # no SLE fits inside 32 pixels


def test_stylegan2_grayscale_trains():
    torch.manual_seed(0)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=1,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=512, channel_max=16))
    D = networks.Discriminator(c_dim=0, img_resolution=32, img_channels=1, channel_base=512, channel_max=16)
    G.requires_grad_(False)
    D.requires_grad_(False)
    pipe = dnnlib.util.construct_class_by_name(class_name='training.augment.AugmentPipe', xflip=1, xint=1, scale=1,
                                               brightness=1, contrast=1, lumaflip=1, saturation=1)
    pipe.p.copy_(torch.tensor(0.5))
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, augment_pipe=pipe, pl_weight=0)
    _step(loss, G, D, 1, 32, 16)
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)


# The folded up-convolution.


def test_folded_up_conv_is_the_reference_linear_map():
    torch.manual_seed(0)
    x = torch.randn([2, 6, 7, 5], dtype=torch.float64, requires_grad=True)
    w = torch.randn([4, 6, 3, 3], dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2, mode='nearest'), w, padding=1)
    got = fastgan.folded_up_conv(x, w)
    assert got.shape == ref.shape == (2, 4, 14, 10)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(ref)
    gx_ref, gw_ref = torch.autograd.grad((ref * probe).sum(), [x, w])
    gx, gw = torch.autograd.grad((got * probe).sum(), [x, w])
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-12, atol=1e-12)


def test_folded_generator_matches_reference_generator():
    torch.manual_seed(0)
    ref = fastgan.Generator(z_dim=16, img_resolution=64, ngf=8).train()
    fold = fastgan.Generator(z_dim=16, img_resolution=64, ngf=8, up_conv='folded').train()
    fold.load_state_dict(ref.state_dict())
    z = torch.randn([3, 16])
    torch.manual_seed(1)
    a = ref(z, None)
    torch.manual_seed(1)
    b = fold(z, None)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


# Fake reuse.


def _nets(seed=0, res=32):
    torch.manual_seed(seed)
    G = fastgan.Generator(z_dim=16, img_resolution=res, ngf=4).train().requires_grad_(False)
    D = fastgan.Discriminator(img_resolution=res, ndf=4, decoder_widths='ndf').train().requires_grad_(False)
    return G, D


def test_fake_reuse_runs_G_once_and_trains_G_through_the_updated_D():
    G, D = _nets()
    calls = []
    G.synthesis.register_forward_hook(lambda *_: calls.append(1))
    loss = FastGANLoss('cpu', G.mapping, G.synthesis, D, terms=MSE)
    assert loss.fake_reuse and loss.D_first
    optD = torch.optim.SGD(D.parameters(), lr=0.5)
    real = torch.rand([2, 3, 32, 32]) * 2 - 1
    c = torch.zeros([2, 0])
    D.requires_grad_(True)
    loss.accumulate_gradients('Dboth', real, c, torch.randn([2, 16]), c, sync=True, gain=1)
    D.requires_grad_(False)
    assert all(p.grad is None for p in G.parameters())          # D's step leaves G alone
    assert all(not p.requires_grad for p in G.parameters())     # and G frozen as the loop left it
    optD.step()
    img, img_aug, _c = loss._reused[0]
    D_after = [p.detach().clone() for p in D.parameters()]
    G.requires_grad_(True)
    loss.accumulate_gradients('Gboth', real, c, torch.randn([2, 16]), c, sync=True, gain=1)
    assert len(calls) == 1 and not loss._reused                  # one G forward for both phases
    # G's gradient is that of -mean D_updated(fakes) at the very fakes the D step saw.
    got = [p.grad.clone() for p in G.parameters() if p.grad is not None]
    assert all(torch.equal(a, b) for a, b in zip(D_after, D.parameters()))
    assert got and sum(float(g.abs().sum()) for g in got) > 0


def test_fake_reuse_off_keeps_G_first_with_fresh_fakes():
    G, D = _nets()
    calls = []
    G.synthesis.register_forward_hook(lambda *_: calls.append(1))
    loss = FastGANLoss('cpu', G.mapping, G.synthesis, D, terms=MSE, fake_reuse=False)
    assert not loss.D_first
    _step(loss, G, D, 3, 32, 16, phases=('Gboth', 'Dboth'))
    assert len(calls) == 2 and not loss._reused


def test_presets_and_cli_options():
    loss_kwargs = presets.PRESETS[('cfg', 'fastgan')]['loss_kwargs']
    assert loss_kwargs['fake_reuse'] is True and loss_kwargs['precision'] == 'auto'
    args = {k: presets.PRESETS[('cfg', 'fastgan')][k] for k in ('G_kwargs', 'D_kwargs', 'loss_kwargs')}
    patch = presets.cli_patch(args, precision='fp32', fake_reuse=False)
    assert patch['loss_kwargs'] == {'precision': 'fp32', 'fake_reuse': False}
    assert patch['G_kwargs'] == {'up_conv': 'nearest'} and patch['D_kwargs'] == {'up_conv': 'nearest'}
    with pytest.raises(ValueError, match='--precision'):
        presets.cli_patch({'loss_kwargs': {'class_name': 'training.loss.StyleGAN2Loss'}}, precision='bf16')


# Precision.


def test_precision_resolution():
    assert resolve_precision('fp32', 'cpu') == 'fp32' and resolve_precision('bf16', 'cpu') == 'bf16'
    assert resolve_precision('auto', 'cuda') == 'fp32'
    assert resolve_precision('auto', 'cpu') in ('fp32', 'bf16')
    with pytest.raises(ValueError, match='precision'):
        resolve_precision('fp16', 'cpu')


def _gradients(precision, round_params=False, seed=0):
    """G's and D's gradients after one D step and one G step (no reuse, no augmentation, plain hinge),
    and what D saw; with round_params every parameter is first rounded to bf16 (arithmetic stays fp32)."""
    G, D = _nets(seed)
    if round_params:
        with torch.no_grad():
            for p in list(G.parameters()) + list(D.parameters()):
                p.copy_(p.bfloat16().float())
    seen = {}

    def keep(_module, _inputs, output):
        seen.setdefault('dtypes', set()).add(output.dtype)
        seen.setdefault('autocast', set()).add(torch.is_autocast_enabled('cpu'))
    D.rf_small.register_forward_hook(keep)
    loss = FastGANLoss('cpu', G.mapping, G.synthesis, D, terms=MSE, fake_reuse=False, precision=precision,
                       hinge_margin=(1, 1))
    torch.manual_seed(seed + 1)
    _step(loss, G, D, 3, 32, 16, phases=('Dboth', 'Gboth'))
    grads = [torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]) for net in (G, D)]
    return grads, seen


def test_bf16_stays_within_bf16_rounding_of_fp32():
    """'Within bf16 rounding': bf16 autocast moves the gradients no further from fp32 than merely
    rounding the parameters to bf16 does (x 1.5), while the fp32 path never enters autocast."""
    g32, seen32 = _gradients('fp32')
    g16, seen16 = _gradients('bf16')
    g_round, _ = _gradients('fp32', round_params=True)
    assert seen32['autocast'] == {False} and seen32['dtypes'] == {torch.float32}
    assert seen16['autocast'] == {True} and seen16['dtypes'] == {torch.bfloat16}
    for a, b, r, name in zip(g32, g16, g_round, 'GD'):
        rel_bf16 = float((b - a).norm() / a.norm())
        rel_round = float((r - a).norm() / a.norm())
        assert 0 < rel_bf16 <= 1.5 * rel_round, (name, rel_bf16, rel_round)
        assert torch.isfinite(b).all()
