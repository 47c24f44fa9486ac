"""conv2d_gradfix: same values as torch, correct first/second derivatives through
the custom path, and no_weight_gradients() observably skipping the weight grad."""
import contextlib

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix

# (input shape, weight shape, kwargs) for conv2d; weights are [out, in/groups, kh, kw].
CONV_CASES = [
    ([1, 2, 4, 4], [2, 2, 3, 3], dict()),
    ([1, 4, 5, 4], [4, 2, 3, 2], dict(stride=2, padding=(1, 0), dilation=(1, 2), groups=2)),
    ([2, 2, 3, 3], [2, 1, 1, 1], dict(stride=(2, 1), padding=1, groups=2)),
    ([1, 1, 6, 5], [2, 1, 2, 2], dict(stride=3, padding=1)),   # stride drops rows: needs output_padding
]
# for conv_transpose2d; weights are [in, out/groups, kh, kw].
TRANSPOSE_CASES = [
    ([1, 2, 3, 3], [2, 2, 3, 3], dict()),
    ([1, 4, 2, 3], [4, 1, 3, 2], dict(stride=2, padding=1, output_padding=1, groups=2)),
    ([1, 2, 2, 2], [2, 1, 2, 3], dict(stride=(2, 3), padding=(0, 1), output_padding=(1, 2), dilation=(1, 2))),
]


def _tensors(xs, ws, bias_ch, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(xs, generator=g, dtype=torch.float64).requires_grad_()
    w = torch.randn(ws, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn([bias_ch], generator=g, dtype=torch.float64).requires_grad_()
    return x, w, b


def _count_weight_grad_ops(fn):
    """Run fn under the profiler; return (fn's result, number of aten::convolution_backward calls)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        result = fn()
    n = sum(1 for e in prof.events() if e.name == 'aten::convolution_backward')
    return result, n


@pytest.mark.parametrize('transposed,case', [(False, c) for c in CONV_CASES] + [(True, c) for c in TRANSPOSE_CASES])
def test_custom_path_values_and_derivatives(transposed, case):
    xs, ws, kw = case
    groups = kw.get('groups', 1)
    out_ch = ws[1] * groups if transposed else ws[0]
    x, w, b = _tensors(xs, ws, out_ch)
    ours = conv2d_gradfix.conv_transpose2d if transposed else conv2d_gradfix.conv2d
    ref = F.conv_transpose2d if transposed else F.conv2d
    fn = lambda x, w, b: ours(x, w, b, **kw)  # noqa: E731

    y = fn(x, w, b)
    assert 'Conv' in type(y.grad_fn).__name__ and 'Convolution' not in type(y.grad_fn).__name__, \
        'custom autograd Function was not used'
    torch.testing.assert_close(y, ref(x, w, b, **kw))
    assert torch.autograd.gradcheck(fn, (x, w, b))
    # fast_mode compares random projections of the analytical and numerical
    # second-order Jacobians: same check, a fraction of the evaluations.
    assert torch.autograd.gradgradcheck(fn, (x, w, b), fast_mode=True)


@pytest.mark.parametrize('transposed', [False, True])
def test_higher_derivatives_match_plain_torch(transposed):
    """An R1-like penalty's gradient (2nd order) and the gradient of that
    gradient's norm (3rd order) w.r.t. input, weight and bias equal torch's own.
    (No output_padding here: torch 2.15's own third derivative of conv_transpose2d
    raises on it; that case is covered by the next test.)"""
    if transposed:
        xs, ws, kw = [1, 4, 3, 3], [4, 1, 3, 2], dict(stride=2, padding=1, groups=2)
    else:
        xs, ws, kw = CONV_CASES[1]
    groups = kw['groups']
    x, w, b = _tensors(xs, ws, ws[1] * groups if transposed else ws[0], seed=1)

    def derivatives(op):
        y = op(x, w, b, **kw)
        g1 = torch.autograd.grad(torch.tanh(y).sum(), [x, w], create_graph=True)
        g2 = torch.autograd.grad(sum(g.square().sum() for g in g1), [x, w, b], create_graph=True)
        g3 = torch.autograd.grad(sum(g.square().sum() for g in g2), [x, w, b])
        return g2 + g3

    ours = derivatives(conv2d_gradfix.conv_transpose2d if transposed else conv2d_gradfix.conv2d)
    theirs = derivatives(F.conv_transpose2d if transposed else F.conv2d)
    for a, t in zip(ours, theirs):
        torch.testing.assert_close(a, t)


@pytest.mark.parametrize('transposed', [False, True])
def test_third_order_by_finite_differences(transposed):
    """gradgradcheck of the first gradient = a check of the third derivative."""
    xs, ws, kw = (CONV_CASES[3] if not transposed else TRANSPOSE_CASES[1])
    groups = kw.get('groups', 1)
    x, w, b = _tensors(xs, ws, ws[1] * groups if transposed else ws[0], seed=5)
    op = conv2d_gradfix.conv_transpose2d if transposed else conv2d_gradfix.conv2d

    def first_grad(x, w, b):
        return torch.autograd.grad(torch.tanh(op(x, w, b, **kw)).sum(), [x, w, b], create_graph=True)
    assert torch.autograd.gradgradcheck(first_grad, (x, w, b), fast_mode=True)


@pytest.mark.parametrize('transposed', [False, True])
def test_no_weight_gradients_skips_weight_op(transposed):
    xs, ws, kw = (CONV_CASES[1] if not transposed else TRANSPOSE_CASES[1])
    op = conv2d_gradfix.conv_transpose2d if transposed else conv2d_gradfix.conv2d
    ref = F.conv_transpose2d if transposed else F.conv2d
    x, w, _ = _tensors(xs, ws, 1, seed=2)
    upstream = torch.randn(op(x, w, **kw).shape, dtype=torch.float64)

    def run():
        x.grad = w.grad = None
        (op(x, w, **kw) * upstream).sum().backward()
        return x.grad, w.grad

    # Baseline: the weight gradient is computed (so the counter does see it).
    (gx, gw), n = _count_weight_grad_ops(run)
    assert n >= 1 and gw is not None

    with conv2d_gradfix.no_weight_gradients():
        (gx_skip, gw_skip), n_skip = _count_weight_grad_ops(run)
    assert n_skip == 0, 'weight-gradient op ran inside no_weight_gradients()'
    assert gw_skip is None

    # Input gradient is still right: compare with torch's op.
    x2 = x.detach().requires_grad_()
    (ref(x2, w.detach(), **kw) * upstream).sum().backward()
    torch.testing.assert_close(gx_skip, x2.grad)
    torch.testing.assert_close(gx, x2.grad)


def test_path_length_pattern():
    """Grad w.r.t. the input taken inside the context (no weight work), then the
    penalty back-propagated outside it: weights get the same gradient as with torch."""
    g = torch.Generator().manual_seed(3)
    ws = torch.randn([2, 3, 6, 6], generator=g, dtype=torch.float64)   # stands in for latents
    w1 = torch.randn([4, 3, 3, 3], generator=g, dtype=torch.float64)
    w2 = torch.randn([4, 2, 3, 3], generator=g, dtype=torch.float64)   # transposed: [in, out/groups]
    noise = torch.randn([2, 4, 11, 11], generator=g, dtype=torch.float64)

    def run(conv, convt, ctx):
        params = [t.clone().requires_grad_() for t in (ws, w1, w2)]
        lat, a, bb = params
        with ctx:
            img = convt(torch.tanh(conv(lat, a, padding=1)), bb, stride=2, padding=1, groups=2)
            pl_grad, n_ops = _count_weight_grad_ops(
                lambda: torch.autograd.grad((img * noise).sum(), [lat], create_graph=True)[0])
        pl_grad.square().sum().backward()
        return [p.grad for p in params], n_ops

    ours, n_ours = run(conv2d_gradfix.conv2d, conv2d_gradfix.conv_transpose2d, conv2d_gradfix.no_weight_gradients())
    theirs, _ = run(F.conv2d, F.conv_transpose2d, contextlib.nullcontext())
    assert n_ours == 0
    for a, t in zip(ours, theirs):
        torch.testing.assert_close(a, t)


def test_no_weight_gradients_nesting_and_disable_flag():
    assert conv2d_gradfix.weight_gradients_disabled is False
    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled is True
        with conv2d_gradfix.no_weight_gradients(disable=False):   # does not re-enable
            assert conv2d_gradfix.weight_gradients_disabled is True
        with conv2d_gradfix.no_weight_gradients():
            assert conv2d_gradfix.weight_gradients_disabled is True
        assert conv2d_gradfix.weight_gradients_disabled is True
    assert conv2d_gradfix.weight_gradients_disabled is False
    with pytest.raises(ValueError):
        with conv2d_gradfix.no_weight_gradients():
            raise ValueError
    assert conv2d_gradfix.weight_gradients_disabled is False

    x = torch.randn([1, 2, 4, 4], requires_grad=True)
    w = torch.randn([3, 2, 3, 3], requires_grad=True)
    with conv2d_gradfix.no_weight_gradients(disable=False):
        conv2d_gradfix.conv2d(x, w).sum().backward()
    assert w.grad is not None and w.grad.shape == w.shape


def test_fallback_to_plain_ops(monkeypatch):
    x = torch.randn([1, 2, 5, 5], requires_grad=True)
    w = torch.randn([3, 2, 3, 3], requires_grad=True)
    custom = type(conv2d_gradfix.conv2d(x, w).grad_fn).__name__

    # 'same' padding, unbatched input and no-grad mode go straight to torch, with torch's results.
    y = conv2d_gradfix.conv2d(x, w, padding='same')
    assert type(y.grad_fn).__name__ != custom and y.shape == (1, 3, 5, 5)
    y = conv2d_gradfix.conv2d(x[0], w)
    assert type(y.grad_fn).__name__ != custom and y.shape == (3, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(conv2d_gradfix.conv2d(x, w, stride=2), F.conv2d(x, w, stride=2))

    monkeypatch.setattr(conv2d_gradfix, 'enabled', False)
    y = conv2d_gradfix.conv_transpose2d(x, w.transpose(0, 1), stride=2)
    assert type(y.grad_fn).__name__ != custom
    torch.testing.assert_close(y, F.conv_transpose2d(x, w.transpose(0, 1), stride=2))
