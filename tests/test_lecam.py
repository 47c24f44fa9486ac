"""The LeCam term (kdgan_plugins.losses.lecam, issue 15 item 2) on fixed tensors: the formula,
the decay-0.9 averages, the warm-up (latest value, no term) and its end at iteration start_iter;
the term inside the loss core; --lecam on any backbone and the biggan_cifar default."""
import pytest
import torch

import dnnlib
from helpers import dry_run
from kdgan_plugins.losses.lecam import LeCam, lecam_halves
from training.loss import StyleGAN2Loss

LECAM = 'kdgan_plugins.losses.lecam.LeCam'


def make_term(**kwargs):
    return LeCam(dnnlib.EasyDict(device=torch.device('cpu')), **kwargs)


def side(term, name, values):
    logits = torch.tensor(values, dtype=torch.float32).reshape(-1, 1).requires_grad_(True)
    return logits, term.D_terms(name, dnnlib.EasyDict(logits=logits), None, dnnlib.EasyDict())


def relu_sq_mean(xs, shift, sign):
    """mean over xs of max(0, sign * (x - shift))^2, written out in plain floats."""
    return sum(max(0.0, sign * (x - shift)) ** 2 for x in xs) / len(xs)


# Per D step: the fakes' logits, then the reals' (the core's order). 4 images per iteration.
STEPS = [
    ([-1.0, 0.5, -2.0, 0.0], [2.0, 1.0, 0.5, -0.5]),
    ([0.5, 1.5, -0.5, -1.5], [1.0, 3.0, -1.0, 0.0]),
    ([-0.25, 0.75, 2.0, -3.0], [0.25, -0.75, 1.5, 2.5]),
    ([1.0, -1.0, 0.5, 0.25], [-0.5, 0.5, 4.0, 1.0]),
]


def test_warm_up_then_the_formula_with_decaying_averages():
    term = make_term(weight=0.3, decay=0.9, start_iter=3, iter_kimg=0.004)   # on from image 8
    ema_real = ema_fake = None
    for step, (fake, real) in enumerate(STEPS):
        active = step >= 2
        assert term.active is active
        mean_f, mean_r = sum(fake) / 4, sum(real) / 4
        # Fake side: its average takes the batch (warm-up: the latest value), then the fake half
        # uses the real average as the last real pass left it.
        ema_fake = 0.9 * ema_fake + 0.1 * mean_f if active else mean_f
        f_logits, f_out = side(term, 'gen', fake)
        assert term.ema_fake.item() == pytest.approx(ema_fake, abs=1e-6)
        ema_real_before = ema_real
        ema_real = 0.9 * ema_real + 0.1 * mean_r if active else mean_r
        r_logits, r_out = side(term, 'real', real)
        assert term.ema_real.item() == pytest.approx(ema_real, abs=1e-6)
        if not active:
            assert f_out == {} and r_out == {}
            continue
        assert set(f_out) == {'lecam_fake'} and set(r_out) == {'lecam_real'}
        want_f = 0.3 * relu_sq_mean(fake, ema_real_before, -1)
        want_r = 0.3 * relu_sq_mean(real, ema_fake, +1)
        assert f_out['lecam_fake'].mean().item() == pytest.approx(want_f, rel=1e-6)
        assert r_out['lecam_real'].mean().item() == pytest.approx(want_r, rel=1e-6)
        # Gradients reach D's outputs only (the averages are constants): d/dx of w*relu(x - e)^2 / N.
        r_out['lecam_real'].mean().backward()
        want_grad = [0.3 * 2 * max(0.0, x - ema_fake) / 4 for x in real]
        assert r_logits.grad.flatten().tolist() == pytest.approx(want_grad, abs=1e-6)
    assert term.nimg.item() == 16


def test_halves_are_the_issue_formula():
    real = torch.tensor([0.3, -1.2, 2.0])
    fake = torch.tensor([-0.7, 0.4, 1.1, -2.0])
    ema_real, ema_fake = torch.tensor(0.5), torch.tensor(-0.25)
    r, f = lecam_halves(real, fake, ema_real, ema_fake)
    reg = r.mean() + f.mean()
    want = (sum(max(0, x + 0.25) ** 2 for x in real.tolist()) / 3 +
            sum(max(0, 0.5 - x) ** 2 for x in fake.tolist()) / 4)
    assert reg.item() == pytest.approx(want, rel=1e-6)


def test_state_round_trip_and_checks():
    term = make_term(start_iter=2, iter_kimg=0.004)
    for fake, real in STEPS[:3]:
        side(term, 'gen', fake)
        side(term, 'real', real)
    state = term.state_dict()
    other = make_term(start_iter=2, iter_kimg=0.004)
    other.load_state_dict(state)
    for key in ('ema_real', 'ema_fake', 'nimg'):
        assert torch.equal(getattr(other, key), getattr(term, key))
    _, a = side(term, 'gen', STEPS[3][0])
    _, b = side(other, 'gen', STEPS[3][0])
    assert torch.equal(a['lecam_fake'], b['lecam_fake'])
    with pytest.raises(KeyError):
        other.load_state_dict(dict(state, extra=torch.zeros([])))
    with pytest.raises(ValueError, match='iter_kimg'):
        make_term(start_iter=1000)
    with pytest.raises(ValueError, match='positive'):
        make_term(weight=0, start_iter=1)


class _TinyD(torch.nn.Module):
    c_dim = 0

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, img, c):
        return img.mean(dim=[1, 2, 3]).unsqueeze(1) * self.w


def test_term_runs_in_the_loss_core_and_reports_both_halves():
    """Through StyleGAN2Loss's D phase (hinge, no R1): the fake half on the fake side, the real half
    on the real side, added to D's gradient."""
    D = _TinyD()
    G_mapping = lambda z, c, **kw: z[:, None, :]   # noqa: E731
    G_synthesis = lambda ws, **kw: ws[:, 0, :].reshape(-1, 1, 2, 2)   # noqa: E731
    spec = dict(class_name=LECAM, weight=1.0, start_iter=1)
    loss = StyleGAN2Loss('cpu', G_mapping, G_synthesis, D, style_mixing_prob=0, r1_gamma=0, pl_weight=0,
                         adversarial='hinge', hinge_margin=(1, 1), terms={'lecam': spec})
    (term,) = loss.terms
    real = torch.full([3, 1, 2, 2], 1.5)
    z = torch.full([3, 4], -1.0)
    loss.accumulate_gradients('Dboth', real, torch.zeros([3, 0]), z, torch.zeros([3, 0]), sync=True, gain=1)
    # D(fake) = -w = -0.5, D(real) = 1.5 w = 0.75. On from the start, so the averages decay from 0.
    assert term.ema_fake.item() == pytest.approx(0.1 * -0.5) and term.ema_real.item() == pytest.approx(0.1 * 0.75)
    # d/dw: hinge fake relu(1 - w) -> -1; LeCam fake relu(0 - (-w))^2 (ema_real still 0) -> 2 w = 1;
    # hinge real relu(1 - 1.5 w) -> -1.5; LeCam real relu(1.5 w + 0.05)^2 -> 2 * 0.8 * 1.5 = 2.4.
    assert D.w.grad.item() == pytest.approx(-1 + 1 - 1.5 + 2.4)


def test_lecam_option_on_any_backbone_and_biggan_default(tmp_path):
    data = 'builtin:shapes-32'
    opts, _, out = dry_run(tmp_path / 'a', data, '--cfg=auto', '--lecam=0.5', '--batch=8')
    assert opts['loss_kwargs']['terms']['lecam'] == dict(class_name=LECAM, weight=0.5, decay=0.9, start_iter=1000,
                                                         iter_kimg=0.008)
    assert 'lecam: LeCam' in out
    opts, _, _ = dry_run(tmp_path / 'b', data, '--cfg=biggan_cifar')
    assert opts['loss_kwargs']['terms']['lecam'] == dict(class_name=LECAM, weight=0.3, decay=0.9, start_iter=1000,
                                                         iter_kimg=0.2)   # batch 50 x 4 D steps per G step
    opts, resolved, _ = dry_run(tmp_path / 'c', data, '--cfg=biggan_cifar', '--lecam=0')
    assert opts['loss_kwargs']['terms']['lecam'] is None and resolved['loss']['terms'] == {}   # None: off
    opts, _, _ = dry_run(tmp_path / 'd', data, '--cfg=fastgan', '--lecam=0.1')
    assert set(opts['loss_kwargs']['terms']) == {'recon', 'lecam'}
    opts, _, _ = dry_run(tmp_path / 'e', data, '--cfg=auto')
    assert 'terms' not in opts['loss_kwargs']   # off unless a recipe has it
