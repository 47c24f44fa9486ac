"""training.loss: phases, statistics, R1 before augmentation, path length with
no_weight_gradients, gain, and the extension hooks."""

import pytest
import torch

from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from training import augment, networks
from training.loss import StyleGAN2Loss

RES = 16
BATCH = 4
Z_DIM = 16

STATS = {
    'Gmain': {'Loss/scores/fake', 'Loss/signs/fake', 'Loss/G/loss'},
    'Greg': {'Loss/pl_penalty', 'Loss/G/reg'},
    'Dmain': {'Loss/scores/fake', 'Loss/signs/fake', 'Loss/scores/real', 'Loss/signs/real', 'Loss/D/loss'},
    'Dreg': {'Loss/scores/real', 'Loss/signs/real', 'Loss/r1_penalty', 'Loss/D/reg'},
}
STATS['Gboth'] = STATS['Gmain'] | STATS['Greg']
STATS['Dboth'] = STATS['Dmain'] | STATS['Dreg']
ALL_STATS = set().union(*STATS.values())


def make_nets(seed=0, c_dim=0):
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=Z_DIM, c_dim=c_dim, w_dim=Z_DIM, img_resolution=RES, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    D = networks.Discriminator(c_dim=c_dim, img_resolution=RES, img_channels=3, channel_base=256, channel_max=16,
                               epilogue_kwargs=dict(mbstd_group_size=2))
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def make_batch(seed=1, c_dim=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand([BATCH, 3, RES, RES], generator=g) * 2 - 1
    z = torch.randn([BATCH, Z_DIM], generator=g)
    c = torch.zeros([BATCH, c_dim])
    return real, c, z, c


def grads(module):
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in module.named_parameters()}


def run_phase(loss, module, phase, batch, gain=1, seed=123):
    """One accumulate_gradients call as the loop makes it; returns the module's gradients."""
    for p in module.parameters():
        p.grad = None
    module.requires_grad_(True)
    torch.manual_seed(seed)
    loss.accumulate_gradients(phase, *batch, sync=True, gain=gain)
    module.requires_grad_(False)
    return grads(module)


@pytest.mark.parametrize('phase', ['Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth'])
def test_phase_reports_contract_stats(phase):
    G, D = make_nets()
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, r1_gamma=1.0)
    collector = training_stats.Collector(regex='Loss/.*', keep_previous=False)
    module = G if phase.startswith('G') else D
    other = D if module is G else G
    g = run_phase(loss, module, phase, make_batch())
    collector.update()
    reported = {name for name in ALL_STATS if collector.num(name) > 0}
    assert reported == STATS[phase]
    for name in STATS[phase]:
        expected = BATCH // 2 if name in ('Loss/pl_penalty', 'Loss/G/reg') else BATCH
        assert collector.num(name) == expected, name
        assert torch.isfinite(torch.tensor(collector.mean(name))), name
    # The trained module receives gradients, the other one none.
    assert any(v is not None and v.abs().sum() > 0 for v in g.values())
    assert all(p.grad is None for p in other.parameters())
    if phase in ('Greg', 'Gboth'):
        assert float(loss.pl_mean) > 0   # The EMA of path lengths moved away from 0.


def test_unknown_phase_refused():
    G, D = make_nets()
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D)
    with pytest.raises(ValueError, match='unknown phase'):
        loss.accumulate_gradients('Gfoo', *make_batch(), sync=True, gain=1)


def test_r1_is_taken_wrt_image_before_augmentation():
    G, D = make_nets()
    pipe = augment.AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, brightness=1, contrast=1)
    pipe.p.fill_(1.0)
    gamma = 3.0
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, augment_pipe=pipe, r1_gamma=gamma)
    batch = make_batch()
    collector = training_stats.Collector(regex='Loss/r1_penalty', keep_previous=False)
    got = run_phase(loss, D, 'Dreg', batch, seed=7)
    collector.update()

    # Reference with plain autograd (custom conv ops off), same augmentation draws.
    real = batch[0].clone().requires_grad_(True)
    D.requires_grad_(True)
    old = conv2d_gradfix.enabled
    conv2d_gradfix.enabled = False
    try:
        torch.manual_seed(7)
        real_aug = pipe(real)
        logits = D(real_aug, batch[1])
        g_before, g_after = torch.autograd.grad(logits.sum(), [real, real_aug], create_graph=True)
        penalty = g_before.square().sum([1, 2, 3])
        penalty_after = g_after.square().sum([1, 2, 3])
        for p in D.parameters():
            p.grad = None
        (penalty * (gamma / 2)).mean().backward()
    finally:
        conv2d_gradfix.enabled = old
        D.requires_grad_(False)
    ref = grads(D)

    assert collector.mean('Loss/r1_penalty') == pytest.approx(float(penalty.detach().mean()), rel=1e-4)
    # The augmented-image gradient differs (the pipe is not the identity), so the check above means something.
    penalty, penalty_after = float(penalty.detach().mean()), float(penalty_after.detach().mean())
    assert abs(penalty_after - penalty) > 1e-3 * penalty
    for name in ref:
        if ref[name] is None:
            assert got[name] is None or got[name].abs().max() == 0, name
        else:
            torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_path_length_uses_no_weight_gradients_and_keeps_weight_grads(monkeypatch):
    G, D = make_nets()
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, pl_weight=2.0, style_mixing_prob=0)
    batch = make_batch()

    # Record whether weight gradients were disabled whenever an input-only gradient is taken.
    seen = []
    real_grad = torch.autograd.grad

    def spy_grad(*args, **kwargs):
        seen.append(conv2d_gradfix.weight_gradients_disabled)
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, 'grad', spy_grad)
    got = run_phase(loss, G, 'Greg', batch, seed=5)
    monkeypatch.undo()
    assert seen == [True]
    assert not conv2d_gradfix.weight_gradients_disabled   # Restored after the phase.

    # The same phase with torch's own convolutions gives the same weight gradients.
    loss_ref = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, pl_weight=2.0, style_mixing_prob=0)
    old = conv2d_gradfix.enabled
    conv2d_gradfix.enabled = False
    try:
        ref = run_phase(loss_ref, G, 'Greg', batch, seed=5)
    finally:
        conv2d_gradfix.enabled = old
    conv_weights = [n for n in ref if n.endswith('conv1.weight') or n.endswith('conv0.weight')]
    assert conv_weights
    for name in conv_weights:
        assert ref[name].abs().max() > 0, name
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-7, msg=name)
    assert float(loss.pl_mean) == pytest.approx(float(loss_ref.pl_mean), rel=1e-5)


@pytest.mark.parametrize('phase', ['Gmain', 'Dmain', 'Dreg'])
def test_gain_scales_gradients(phase):
    G, D = make_nets()
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, r1_gamma=1.0)
    module = G if phase.startswith('G') else D
    g1 = run_phase(loss, module, phase, make_batch(), gain=1)
    g3 = run_phase(loss, module, phase, make_batch(), gain=3)
    checked = 0
    for name, value in g1.items():
        if value is not None and value.abs().max() > 0:
            # Gains multiply each side's term before the two are summed, so allow rounding at
            # the scale of the whole tensor (cancellation between sides).
            scale = float(value.abs().max())
            torch.testing.assert_close(g3[name], value * 3, rtol=1e-4, atol=1e-4 * scale, msg=name)
            checked += 1
    assert checked > 0


def test_state_dict_round_trip():
    G, D = make_nets()
    loss = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D)
    run_phase(loss, G, 'Greg', make_batch())
    other = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D)
    other.load_state_dict(loss.state_dict())
    assert float(other.pl_mean) == float(loss.pl_mean) != 0
    with pytest.raises(KeyError):
        other.load_state_dict({'pl_mean': torch.zeros([]), 'bogus': 1})


class ExtraTermLoss(StyleGAN2Loss):
    """A plug-in style loss: asks D for an extra output in run_D and adds a term on real images."""

    def __init__(self, *args, weight=0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight = weight
        self.sides_seen = []

    def run_D(self, img, c, sync, side):
        res = super().run_D(img, c, sync, side)
        res.mean_pixel = res.img_aug.mean([1, 2, 3])   # Something extra, stored for the hook.
        return res

    def extra_D_terms(self, side, res, c):
        self.sides_seen.append(side)
        if side != 'real':
            return {}
        return {'extra': self.weight * (res.logits[:, 0] - res.mean_pixel).square()}


def test_extra_D_terms_hook_adds_gradient_to_D():
    G, D = make_nets()
    batch = make_batch()
    base = StyleGAN2Loss('cpu', G.mapping, G.synthesis, D, style_mixing_prob=0)
    plug = ExtraTermLoss('cpu', G.mapping, G.synthesis, D, style_mixing_prob=0, weight=0.5)
    collector = training_stats.Collector(regex='Loss/D/.*', keep_previous=False)
    g_base = run_phase(base, D, 'Dmain', batch, seed=3)
    collector.update()
    assert collector.num('Loss/D/extra') == 0
    g_plug = run_phase(plug, D, 'Dmain', batch, seed=3)
    collector.update()
    assert plug.sides_seen == ['gen', 'real']
    assert collector.num('Loss/D/extra') == BATCH

    # The difference is exactly the gradient of the extra term.
    D.requires_grad_(True)
    for p in D.parameters():
        p.grad = None
    logits = D(batch[0], batch[1])
    (0.5 * (logits[:, 0] - batch[0].mean([1, 2, 3])).square()).mean().backward()
    D.requires_grad_(False)
    g_term = grads(D)
    changed = 0
    for name, value in g_term.items():
        if value is None:
            continue
        torch.testing.assert_close(g_plug[name] - g_base[name], value, rtol=1e-4, atol=1e-6, msg=name)
        changed += int(value.abs().max() > 0)
    assert changed > 0


class HingeLoss(StyleGAN2Loss):
    def G_adv_term(self, gen_logits):
        return -gen_logits

    def D_adv_term_gen(self, gen_logits):
        return torch.relu(1 + gen_logits)

    def D_adv_term_real(self, real_logits):
        return torch.relu(1 - real_logits)


def test_adversarial_term_hooks():
    G, D = make_nets()
    batch = make_batch()
    loss = HingeLoss('cpu', G.mapping, G.synthesis, D, style_mixing_prob=0)
    got = run_phase(loss, D, 'Dmain', batch, seed=11)

    # Reference: same fakes (same seed for the noise inputs), hinge loss by hand.
    D.requires_grad_(True)
    for p in D.parameters():
        p.grad = None
    torch.manual_seed(11)
    with torch.no_grad():
        fake = G.synthesis(G.mapping(batch[2], batch[3]))
    torch.relu(1 + D(fake, batch[3])).mean().backward()
    torch.relu(1 - D(batch[0], batch[1])).mean().backward()
    D.requires_grad_(False)
    for name, value in grads(D).items():
        if value is not None:
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-6, msg=name)
