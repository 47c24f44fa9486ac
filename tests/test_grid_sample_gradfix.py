"""grid_sample_gradfix: torch's values, and a correct second derivative on BOTH
paths (torch's native double backward and our own Function), checked by an
R1-style penalty against finite differences and by gradcheck/gradgradcheck."""
import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import grid_sample_gradfix as gsg

PATHS = ['native', 'own', 'own-on-old-torch']
_NOT_IMPLEMENTED = 'derivative for aten::grid_sampler_2d_backward is not implemented'


class _OldTorchGridSample(torch.autograd.Function):
    """grid_sample as torch 1.11-2.x had it: first derivative fine, second raises."""

    @staticmethod
    def forward(ctx, x, grid, *args, **kwargs):
        ctx.save_for_backward(x, grid)
        return _REAL_GRID_SAMPLE(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)

    @staticmethod
    def backward(ctx, go):
        if torch.is_grad_enabled():
            raise RuntimeError(_NOT_IMPLEMENTED)
        x, grid = ctx.saved_tensors
        return _REAL_BACKWARD(go, x, grid, 0, 0, False, list(ctx.needs_input_grad[:2]))


def _old_grid_sample_backward(*args):
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        raise RuntimeError(_NOT_IMPLEMENTED)   # a graph of this op could not be differentiated
    return _REAL_BACKWARD(*args)


_REAL_GRID_SAMPLE = F.grid_sample
_REAL_BACKWARD = torch.ops.aten.grid_sampler_2d_backward


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """Select an implementation. 'native'/'own' are forced on the installed torch;
    'own-on-old-torch' makes torch's second derivative raise and lets the probe decide."""
    if request.param == 'native' and not _torch_double_backward_runs():
        pytest.skip('installed torch cannot differentiate grid_sample twice')
    monkeypatch.setattr(gsg, 'enabled', True)
    if request.param == 'own-on-old-torch':
        monkeypatch.setattr(F, 'grid_sample', lambda x, g, *a, **k: _OldTorchGridSample.apply(x, g))
        monkeypatch.setattr(torch.ops.aten, 'grid_sampler_2d_backward', _old_grid_sample_backward)
        monkeypatch.setattr(gsg, '_probe_cache', {})
        monkeypatch.setattr(gsg, 'native_double_backward', None)
        assert not _torch_double_backward_runs(), 'simulation of old torch is not in effect'
        assert gsg._use_own_path(torch.zeros([1])), 'probe failed to notice the missing derivative'
    else:
        monkeypatch.setattr(gsg, 'native_double_backward', request.param == 'native')
    return request.param


def _torch_double_backward_runs():
    x = torch.randn([1, 1, 3, 3], dtype=torch.float64, requires_grad=True)
    g = (torch.rand([1, 2, 2, 2], dtype=torch.float64) * 2 - 1).requires_grad_()
    try:
        (gx,) = torch.autograd.grad(F.grid_sample(x, g, align_corners=False).square().sum(), [x], create_graph=True)
        torch.autograd.grad(gx.sum(), [g])
        return True
    except (RuntimeError, NotImplementedError):
        return False


def _inputs(seed, n=1, c=2, h=5, w=4, ho=4, wo=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([n, c, h, w], generator=gen, dtype=torch.float64)
    # A rotated, scaled grid reaching past the borders, so zero padding matters.
    ys, xs = torch.meshgrid(torch.linspace(-1.1, 1.1, ho, dtype=torch.float64),
                            torch.linspace(-1.1, 1.1, wo, dtype=torch.float64), indexing='ij')
    base = torch.stack([xs * 0.9 + ys * 0.35, ys * 0.95 - xs * 0.3], dim=-1)
    grid = base[None].repeat(n, 1, 1, 1) + 0.07 * torch.randn([n, ho, wo, 2], generator=gen, dtype=torch.float64)
    return x, grid


def test_probe_agrees_with_installed_torch():
    """The capability probe says 'native' exactly when torch's double backward runs."""
    assert gsg._native_double_backward_works(torch.device('cpu')) == _torch_double_backward_runs()


def test_reference_matches_torch():
    x, grid = _inputs(0, n=2, c=3)
    torch.testing.assert_close(gsg.reference_grid_sample(x, grid),
                               F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False))


def test_values_and_first_derivatives(path):
    x, grid = _inputs(1, n=2)
    x.requires_grad_()
    grid.requires_grad_()
    y = gsg.grid_sample(x, grid)
    is_own = type(y.grad_fn).__name__.startswith('_GridSample')
    assert is_own == path.startswith('own')
    assert y.shape == (2, 2, 4, 3)
    ref = _REAL_GRID_SAMPLE(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    torch.testing.assert_close(y, ref)
    go = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, [x, grid], go), torch.autograd.grad(ref, [x, grid], go))


def test_gradcheck_and_gradgradcheck(path):
    x, grid = _inputs(2, c=1, h=3, w=3, ho=2, wo=3)
    x.requires_grad_()
    grid.requires_grad_()
    assert torch.autograd.gradcheck(gsg.grid_sample, (x, grid))
    assert torch.autograd.gradgradcheck(gsg.grid_sample, (x, grid))


def _r1(x, grid, wd):
    """||d/dx D(grid_sample(x, grid))||^2 for a tiny nonlinear conv D."""
    img = gsg.grid_sample(x, grid)
    logits = F.softplus(F.conv2d(img, wd, padding=1)).sum()
    (gx,) = torch.autograd.grad(logits, [x], create_graph=True)
    return gx.square().sum()


def test_r1_second_derivative_vs_finite_differences(path):
    x, grid = _inputs(3, h=4, w=4, ho=3, wo=3)
    wd = torch.randn([1, 2, 3, 3], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    params = [x.clone().requires_grad_(), grid.clone().requires_grad_(), wd.clone().requires_grad_()]
    analytic = torch.autograd.grad(_r1(*params), params)

    eps = 1e-6
    for i, (p, a) in enumerate(zip(params, analytic)):
        assert a.shape == p.shape
        numeric = torch.zeros_like(p)
        flat = numeric.view(-1)
        for j in range(p.numel()):
            vals = []
            for s in (eps, -eps):
                q = [t.detach().clone().requires_grad_() for t in params]
                q[i].data.view(-1)[j] += s
                vals.append(_r1(*q).item())
            flat[j] = (vals[0] - vals[1]) / (2 * eps)
        torch.testing.assert_close(a, numeric, rtol=1e-5, atol=1e-6)
    assert analytic[0].abs().sum() > 0 and analytic[1].abs().sum() > 0   # non-trivial check


def test_own_path_first_order_uses_fused_kernel(monkeypatch):
    """Without create_graph the own path calls torch's fused backward kernel only."""
    monkeypatch.setattr(gsg, 'native_double_backward', False)
    calls = []
    real = torch.ops.aten.grid_sampler_2d_backward

    class Spy:
        def __call__(self, *args):
            calls.append(args[-1])
            return real(*args)

    monkeypatch.setattr(gsg.torch.ops.aten, 'grid_sampler_2d_backward', Spy())
    x, grid = _inputs(5)
    x.requires_grad_()
    gsg.grid_sample(x, grid).sum().backward()
    assert calls == [[True, False]]      # only grad_input asked for: grid needs none
    assert x.grad.shape == x.shape


def test_disabled_is_plain_torch(monkeypatch):
    monkeypatch.setattr(gsg, 'enabled', False)
    monkeypatch.setattr(gsg, 'native_double_backward', False)
    x, grid = _inputs(6)
    x.requires_grad_()
    y = gsg.grid_sample(x, grid)
    assert not type(y.grad_fn).__name__.startswith('_GridSample')
