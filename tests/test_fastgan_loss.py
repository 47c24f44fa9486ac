"""FastGAN's loss on the shared core: hinge terms with the random margin, the
reconstruction term (mse / l1 / lpips through a tiny stand-in detector), the
auxiliary image path with DiffAugment, and where gradients go."""

import types

import pytest
import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import training_stats
from training.loss import StyleGAN2Loss

from kdgan_plugins.augment.diffaugment import DiffAugment
from kdgan_plugins.losses import check_assets, terms
from kdgan_plugins.losses.fastgan_loss import FastGANLoss
from kdgan_plugins.networks.fastgan import Discriminator, Generator

RES = 64
BATCH = 2
Z_DIM = 16
RECON = 'kdgan_plugins.losses.terms.Reconstruction'


def make_nets(seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=Z_DIM, img_resolution=RES, ngf=8).train().requires_grad_(False)
    D = Discriminator(img_resolution=RES, ndf=8).train().requires_grad_(False)
    return G, D


def make_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand([BATCH, 3, RES, RES], generator=g) * 2 - 1
    z = torch.randn([BATCH, Z_DIM], generator=g)
    c = torch.zeros([BATCH, 0])
    return real, c, z, c


def zero_grads(*modules):
    for m in modules:
        for p in m.parameters():
            p.grad = None


def grad_norm(params):
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


# Hinge terms.


def test_hinge_terms_equal_formula_with_fixed_rng():
    logits = torch.randn([3, 50])
    torch.manual_seed(5)
    got_real = terms.hinge_D_real(logits)
    got_gen = terms.hinge_D_gen(logits)
    torch.manual_seed(5)
    u_real = torch.rand_like(logits)   # One uniform per element of the logit map, per call.
    u_gen = torch.rand_like(logits)
    torch.testing.assert_close(got_real, torch.clamp(u_real * 0.2 + 0.8 - logits, min=0))
    torch.testing.assert_close(got_gen, torch.clamp(u_gen * 0.2 + 0.8 + logits, min=0))
    torch.testing.assert_close(terms.hinge_G(logits), -logits)
    assert not torch.equal(u_real, u_gen)
    # The margin really varies per element, within [0.8, 1.0].
    margins = terms.hinge_D_real(torch.zeros([1000]))
    assert 0.8 <= float(margins.min()) and float(margins.max()) <= 1.0 and float(margins.std()) > 0.03
    # (1, 1) is the plain hinge.
    torch.testing.assert_close(terms.hinge_D_real(logits, (1, 1)), torch.clamp(1 - logits, min=0))


def test_fastgan_loss_uses_hinge_hooks():
    G, D = make_nets()
    loss = FastGANLoss('cpu', G.mapping, G.synthesis, D, terms={})
    logits = torch.randn([2, 50])
    torch.manual_seed(9)
    got = loss.D_adv_term_real(logits)
    torch.manual_seed(9)
    torch.testing.assert_close(got, F.relu(torch.rand_like(logits) * 0.2 + 0.8 - logits))
    torch.testing.assert_close(loss.G_adv_term(logits), -logits)
    with pytest.raises(ValueError, match='pl_weight'):
        FastGANLoss('cpu', G.mapping, G.synthesis, D, pl_weight=2, terms={})


# Reconstruction term on its own.


def stub_loss():
    return types.SimpleNamespace(device=torch.device('cpu'), D_module=types.SimpleNamespace(recon_resolution=16))


def make_rec(seed=3, n=3, size=16):
    g = torch.Generator().manual_seed(seed)
    rec = {}
    for part in ('big', 'small', 'part'):
        rec[part] = (torch.rand([n, 3, size, size], generator=g) * 2 - 1).requires_grad_(True)
        rec['target_' + part] = torch.rand([n, 3, size, size], generator=g) * 2 - 1
    rec['part_index'] = 1
    return rec


@pytest.mark.parametrize('kind', ['mse', 'l1'])
@pytest.mark.parametrize('reduction', ['mean', 'sum'])
def test_recon_pixel_kinds_equal_formula(kind, reduction):
    rec = make_rec()
    term = terms.Reconstruction(stub_loss(), kind=kind, weight=0.5, reduction=reduction)
    assert term.D_outputs('real') == ('recon',) and term.D_outputs('gen') == ()
    assert term.D_terms('gen', dnnlib.EasyDict(rec=rec), None, {}) == {}
    out = term.D_terms('real', dnnlib.EasyDict(rec=rec), None, {})
    assert sorted(out) == ['recon_big', 'recon_part', 'recon_small']
    for part in ('big', 'small', 'part'):
        diff = rec[part].detach() - rec['target_' + part]
        per_image = [float((d.abs() if kind == 'l1' else d ** 2).mean()) for d in diff]
        expect = 0.5 * (sum(per_image) if reduction == 'sum' else sum(per_image) / len(per_image))
        assert float(out['recon_' + part].detach().mean()) == pytest.approx(expect, rel=1e-5)


def test_recon_default_reductions():
    assert terms.Reconstruction(stub_loss(), kind='mse').reduction == 'mean'
    assert terms.Reconstruction(stub_loss(), kind='lpips', detector=TinyDetector()).reduction == 'sum'
    with pytest.raises(TypeError, match='decoders'):
        terms.Reconstruction(types.SimpleNamespace(device='cpu', D_module=torch.nn.Linear(1, 1)), kind='mse')


class TinyDetector(torch.nn.Module):
    """A random stand-in with the calling convention of NVIDIA's vgg16.pt (uint8-range input)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images: torch.Tensor, resize_images: bool = True, return_lpips: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = torch.relu(self.conv(images / 255.0))
        if return_lpips:
            return (x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)).flatten(1) / 4.0
        return x.mean(dim=[2, 3])


def test_recon_lpips_through_resolver_with_stand_in_detector(tmp_path):
    path = str(tmp_path / 'tiny_vgg16.pt')
    torch.jit.script(TinyDetector()).save(path)
    term = terms.Reconstruction(stub_loss(), kind='lpips', weight=2.0, detector=path)
    rec = make_rec()
    out = term.D_terms('real', dnnlib.EasyDict(rec=rec), None, {})
    ref = TinyDetector()
    for part in ('big', 'small', 'part'):
        fa = ref((rec[part].detach() + 1) * 127.5, return_lpips=True)
        fb = ref((rec['target_' + part] + 1) * 127.5, return_lpips=True)
        expect = 2.0 * float(((fa - fb) ** 2).sum())   # Summed over the batch, as the official code.
        assert float(out['recon_' + part].detach()) == pytest.approx(expect, rel=1e-4)
    sum(out.values()).backward()
    assert all(rec[p].grad is not None and float(rec[p].grad.abs().sum()) > 0 for p in ('big', 'small', 'part'))
    assert all(p.grad is None and not p.requires_grad for p in term.detector.parameters())


def test_check_assets_fails_before_training_without_vgg16(tmp_path, monkeypatch):
    from metrics import detectors
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('KDGAN_DETECTOR_DIR', raising=False)
    monkeypatch.setattr(detectors, '_probe', lambda url, timeout: 'network is unreachable')
    lpips_kwargs = dict(class_name='kdgan_plugins.losses.fastgan_loss.FastGANLoss',
                        terms=dict(recon=dict(class_name=RECON, kind='lpips')))
    with pytest.raises(detectors.AssetUnavailableError, match='vgg16.pt'):
        check_assets(lpips_kwargs)
    with pytest.raises(detectors.AssetUnavailableError, match='vgg16.pt'):   # FastGANLoss's default term
        check_assets(dict(class_name='kdgan_plugins.losses.fastgan_loss.FastGANLoss'))
    assert check_assets(dict(lpips_kwargs, terms=dict(recon=dict(class_name=RECON, kind='mse')))) == []
    folder = tmp_path / 'det'
    folder.mkdir()
    torch.jit.script(TinyDetector()).save(str(folder / 'vgg16.pt'))
    lines = check_assets(lpips_kwargs, detector_dir=str(folder))
    assert len(lines) == 1 and str(folder / 'vgg16.pt') in lines[0]


# The loss with FastGAN G/D and DiffAugment.


class RecordingD(torch.nn.Module):
    """Wraps the FastGAN D and records what it was given and returned."""

    def __init__(self, D):
        super().__init__()
        self.inner = D
        self.calls = []
        self.recon_resolution = D.recon_resolution

    def forward(self, img, c, **kwargs):
        out = self.inner(img, c, **kwargs)
        self.calls.append(dict(img=img.detach().clone(), kwargs=kwargs, out=out))
        return out


class CountingAugment(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pipe = DiffAugment()
        self.inputs = []
        self.register_buffer('p', torch.ones([]))

    def forward(self, x):
        self.inputs.append(tuple(x.shape))
        return self.pipe(x)


def test_phases_with_fastgan_and_diffaugment_route_images_and_gradients():
    G, D0 = make_nets()
    D = RecordingD(D0)
    aug = CountingAugment()
    loss = FastGANLoss('cpu', G.mapping, G.synthesis, D, aug,
                       terms=dict(recon=dict(class_name=RECON, kind='mse', weight=1.0)))
    batch = make_batch()
    collector = training_stats.Collector(regex='Loss/.*', keep_previous=False)

    # Gmain: gradients reach G through both outputs, nothing reaches D.
    zero_grads(G, D0)
    G.requires_grad_(True)
    loss.accumulate_gradients('Gmain', *batch, sync=True, gain=1)
    G.requires_grad_(False)
    assert aug.inputs == [(BATCH, 3, RES, RES), (BATCH, 3, G.aux_resolution, G.aux_resolution)]
    call = D.calls[-1]
    assert 'img_small' in call['kwargs'] and not call['kwargs'].get('recon')
    assert grad_norm(G.synthesis.parameters()) > 0
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for n, p in G.synthesis.named_parameters()
               if 'to_128' in n), 'the auxiliary image must take part in the G loss'
    assert all(p.grad is None for p in D0.parameters())
    collector.update()
    assert collector.num('Loss/G/loss') == BATCH * 50

    # Dmain: the fakes go to D as an independently augmented pair, the reals alone with recon.
    aug.inputs.clear()
    D.calls.clear()
    zero_grads(G, D0)
    D0.requires_grad_(True)
    torch.manual_seed(4)
    loss.accumulate_gradients('Dmain', *batch, sync=True, gain=1)
    D0.requires_grad_(False)
    assert len(aug.inputs) == 3   # fake big, fake small, real
    gen_call, real_call = D.calls
    assert 'img_small' in gen_call['kwargs'] and not gen_call['kwargs'].get('recon')
    assert real_call['kwargs'].get('recon') and 'img_small' not in real_call['kwargs']
    assert not torch.equal(real_call['img'], batch[0])   # D saw the augmented real...
    _logits, rec = real_call['out']
    torch.testing.assert_close(rec['target_big'], real_call['img'])   # ...and reconstructs that very image.
    collector.update()
    expect_big = float((rec['big'] - rec['target_big']).square().mean())
    assert collector.mean('Loss/D/recon_big') == pytest.approx(expect_big, rel=1e-4)
    for name in ('recon_big', 'recon_small', 'recon_part'):
        assert collector.num('Loss/D/' + name) == BATCH
    assert all(p.grad is None for p in G.parameters())
    for prefix in ('decoder_big', 'decoder_small', 'decoder_part', 'small_stem', 'rf_big_conv2'):
        assert grad_norm(p for n, p in D0.named_parameters() if n.startswith(prefix)) > 0, prefix


def test_r1_on_fastgan_differentiates_unaugmented_image():
    G, D = make_nets()
    loss = FastGANLoss('cpu', G.mapping, G.synthesis, D, DiffAugment(), r1_gamma=1.0,
                       terms=dict(recon=dict(class_name=RECON, kind='l1')))
    collector = training_stats.Collector(regex='Loss/(r1_penalty|D/recon_big)', keep_previous=False)
    D.requires_grad_(True)
    loss.accumulate_gradients('Dboth', *make_batch(), sync=True, gain=1)
    D.requires_grad_(False)
    collector.update()
    assert collector.num('Loss/r1_penalty') == BATCH and collector.mean('Loss/r1_penalty') > 0
    assert collector.num('Loss/D/recon_big') == BATCH


def test_core_refuses_G_aux_without_auxiliary_output():
    from training import networks
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=128, channel_max=8))
    _, D = make_nets()
    with pytest.raises(TypeError, match='auxiliary'):
        StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, G_aux=True)
