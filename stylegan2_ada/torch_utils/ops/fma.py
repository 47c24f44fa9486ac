"""Fused multiply-add a*b + c (torch.addcmul) with an explicit backward.

Why a custom Function: autograd would keep the a*b intermediate; here only a
and b are saved and each gradient is summed straight back to its argument's
broadcast shape. The backward is plain ops, so it differentiates again.
"""

import torch


def fma(a, b, c):
    """a * b + c with broadcasting; python numbers are accepted for any argument."""
    ref = next((t for t in (a, b, c) if isinstance(t, torch.Tensor)), None)
    if ref is None:
        return a * b + c
    a, b, c = (t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=ref.dtype, device=ref.device)
               for t in (a, b, c))
    return _FusedMultiplyAdd.apply(a, b, c)


class _FusedMultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c):
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None,
                              b if ctx.needs_input_grad[0] else None)
        ctx.shapes = (a.shape, b.shape, c.shape)
        ctx.dtypes = (a.dtype, b.dtype, c.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        (sa, sb, sc), (da, db, dc) = ctx.shapes, ctx.dtypes
        grad_a = grad_b = grad_c = None
        if ctx.needs_input_grad[0]:
            grad_a = _sum_to_shape(grad_out * b, sa).to(da)
        if ctx.needs_input_grad[1]:
            grad_b = _sum_to_shape(grad_out * a, sb).to(db)
        if ctx.needs_input_grad[2]:
            grad_c = _sum_to_shape(grad_out, sc).to(dc)
        return grad_a, grad_b, grad_c


def _sum_to_shape(x, shape):
    """Undo broadcasting: sum over leading extra dims and over dims that were 1."""
    extra = x.ndim - len(shape)
    assert extra >= 0, (x.shape, shape)
    if extra:
        x = x.sum(dim=list(range(extra)))
    dims = [i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1]
    if dims:
        x = x.sum(dim=dims, keepdim=True)
    assert x.shape == shape, (x.shape, shape)
    return x
