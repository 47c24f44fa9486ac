"""a * b + c through torch.addcmul, with a backward written out by hand.

Why: the synthesis layers add noise to a modulated activation this way. Left to autograd,
the broadcast product a * b would be kept alive for the backward pass; this Function keeps
only the operands it needs and folds each gradient back onto its operand's (broadcast)
shape itself. The backward is made of ordinary ops, so it can be differentiated again.
"""

import torch


def fma(a, b, c) -> torch.Tensor:
    """a * b + c with broadcasting; any operand may be a Python number."""
    tensors = [t for t in (a, b, c) if isinstance(t, torch.Tensor)]
    if not tensors:
        return a * b + c
    like = tensors[0]
    a, b, c = (_as_tensor_like(v, like) for v in (a, b, c))
    return _FusedMultiplyAdd.apply(a, b, c)


def _as_tensor_like(value, like):
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _fold_to(grad, shape):
    """Sum a gradient back to `shape`, the inverse of broadcasting: first over the leading
    dimensions broadcasting added, then (keeping them) over the ones it stretched from 1."""
    added = grad.ndim - len(shape)
    assert added >= 0, f'cannot fold a gradient of shape {tuple(grad.shape)} to {tuple(shape)}'
    if added > 0:
        grad = grad.sum(dim=list(range(added)))
    stretched = [d for d, size in enumerate(shape) if size == 1 and grad.shape[d] != 1]
    if stretched:
        grad = grad.sum(dim=stretched, keepdim=True)
    assert grad.shape == shape, f'cannot fold a gradient of shape {tuple(grad.shape)} to {tuple(shape)}'
    return grad


_sum_to_shape = _fold_to  # older name, kept for callers and tests


class _FusedMultiplyAdd(torch.autograd.Function):
    """The tests and autograd's grad_fn name (`_FusedMultiplyAddBackward`) rely on this class name."""

    @staticmethod
    def forward(ctx, a, b, c):
        need_a, need_b, _ = ctx.needs_input_grad
        # d/da needs b and d/db needs a; nothing else is kept.
        ctx.save_for_backward(b if need_a else None, a if need_b else None)
        ctx.meta = [(t.shape, t.dtype) for t in (a, b, c)]
        return torch.addcmul(c, a, b)

    @staticmethod
    def backward(ctx, grad):
        b, a = ctx.saved_tensors
        factors = (b, a, None)
        grads = []
        for needed, factor, (shape, dtype) in zip(ctx.needs_input_grad, factors, ctx.meta):
            if not needed:
                grads.append(None)
                continue
            g = grad if factor is None else grad * factor
            grads.append(_fold_to(g, shape).to(dtype))
        return tuple(grads)
