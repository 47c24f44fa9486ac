"""fma(a, b, c) = a*b + c: values and gradients under broadcasting, each gradient
shaped like its argument, and differentiable again."""
import pytest
import torch

from torch_utils.ops import fma as fma_mod
from torch_utils.ops.fma import fma

SHAPES = [
    ([3, 4], [3, 4], [3, 4]),
    ([2, 1, 4], [3, 1], [4]),          # all three broadcast, c has fewer dims
    ([1], [2, 3, 1, 5], [2, 1, 4, 1]),  # a is a single element
    ([5, 1], [1, 6], []),              # c is 0-d
]


@pytest.mark.parametrize('sa,sb,sc', SHAPES)
def test_values_and_gradients_under_broadcasting(sa, sb, sc):
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in (sa, sb, sc)]
    out = fma(*args)
    assert type(out.grad_fn).__name__.startswith('_FusedMultiplyAdd')
    ref = args[0] * args[1] + args[2]
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)

    go = torch.randn(out.shape, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad(out, args, go)
    theirs = torch.autograd.grad(ref, args, go)
    for o, t, a in zip(ours, theirs, args):
        assert o.shape == a.shape
        torch.testing.assert_close(o, t)

    assert torch.autograd.gradcheck(fma, args)
    assert torch.autograd.gradgradcheck(fma, args)


def test_partial_requires_grad_and_python_scalars():
    a = torch.randn([2, 3], requires_grad=True)
    b = torch.randn([3])                       # no grad wanted
    out = fma(a, b, 0.5)
    torch.testing.assert_close(out, a * b + 0.5)
    out.sum().backward()
    torch.testing.assert_close(a.grad, b.expand(2, 3))
    assert b.grad is None
    torch.testing.assert_close(fma(2.0, a, a), 3 * a)


def test_sum_to_shape_rejects_impossible_shapes():
    with pytest.raises(AssertionError):
        fma_mod._sum_to_shape(torch.zeros([3]), [2, 3, 4])
