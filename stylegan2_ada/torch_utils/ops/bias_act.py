"""Fused bias + activation + gain + clamp.

`impl='ref'` is plain PyTorch. `impl='cuda'` runs one fused kernel (one read, one write,
and a backward that keeps only x or y instead of every intermediate) when x is on a CUDA
device and the plugin builds; otherwise it quietly takes the reference path after one
warning. Both paths give first and second derivatives.
"""

import math
import os
from typing import Optional

import torch
import torch.nn.functional as F

from .. import custom_ops


class _Spec(dict):
    """Tiny attribute-access dict, so this op does not depend on dnnlib."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def _act(ref, cuda_idx, grad_from, has_2nd_grad, def_alpha=0.0, def_gain=1.0):
    # `ref`/`func`: the PyTorch definition. `grad_from`: which tensor the kernel's backward
    # differentiates from ('x' input, 'y' output, '' none) - saving y lets autograd free x.
    return _Spec(ref=ref, func=ref, cuda_idx=cuda_idx, grad_from=grad_from,
                 has_2nd_grad=has_2nd_grad, def_alpha=def_alpha, def_gain=def_gain)


_SQRT2 = math.sqrt(2)

activation_funcs = _Spec(
    linear=_act(lambda x, **_: x, 1, '', False),
    relu=_act(lambda x, **_: F.relu(x), 2, 'y', False, def_gain=_SQRT2),
    lrelu=_act(lambda x, alpha, **_: F.leaky_relu(x, alpha), 3, 'y', False, def_alpha=0.2, def_gain=_SQRT2),
    tanh=_act(lambda x, **_: torch.tanh(x), 4, 'y', True),
    sigmoid=_act(lambda x, **_: torch.sigmoid(x), 5, 'y', True),
    elu=_act(lambda x, **_: F.elu(x), 6, 'y', True),
    selu=_act(lambda x, **_: F.selu(x), 7, 'y', True),
    softplus=_act(lambda x, **_: F.softplus(x), 8, 'y', True),
    swish=_act(lambda x, **_: torch.sigmoid(x) * x, 9, 'x', True),
)


_op = custom_ops.OpPlugin('bias_act', module_name='kdgan_bias_act', sources=['bias_act.cpp', 'bias_act.cu'],
                          headers=['bias_act.h'], source_dir=os.path.dirname(os.path.abspath(__file__)))
build_plugin = _op.build  # build/import now (compile check); raises custom_ops.PluginError


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = 'linear',
             alpha: Optional[float] = None, gain: Optional[float] = None, clamp: Optional[float] = None,
             impl: str = 'cuda') -> torch.Tensor:
    """y = clamp(act(x + b) * gain, -clamp, clamp), with b broadcast along `dim`.

    alpha, gain default to the activation's def_alpha/def_gain; clamp=None disables clamping.
    """
    assert isinstance(x, torch.Tensor), 'x must be a tensor'
    assert impl in ('ref', 'cuda'), f'unknown impl {impl!r}'
    spec = activation_funcs[act]
    alpha, gain, clamp = _resolve_constants(spec, alpha, gain, clamp)
    if x.ndim > 0:
        dim %= x.ndim
    if b is not None:
        _check_bias(x, b, dim)
        b = b.to(x.dtype)
    plugin = _op.get() if _op.wants(x, impl) else None
    if plugin is None:
        return _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)
    return _bias_act_cuda(plugin, x, b, dim, spec, alpha, gain, clamp)


def _resolve_constants(spec, alpha, gain, clamp):
    """Plain floats for the kernel and the reference alike; clamp < 0 means 'no clamp'."""
    assert clamp is None or clamp >= 0, 'clamp must be None or >= 0'
    return (float(spec.def_alpha if alpha is None else alpha),
            float(spec.def_gain if gain is None else gain),
            -1.0 if clamp is None else float(clamp))


def _check_bias(x, b, dim):
    assert isinstance(b, torch.Tensor) and b.ndim == 1, 'b must be a 1-D tensor'
    assert 0 <= dim < x.ndim, f'dim {dim} out of range for a {x.ndim}-D input'
    assert b.shape[0] == x.shape[dim], f'b has {b.shape[0]} entries, x has {x.shape[dim]} along dim {dim}'


def _bias_act_ref(x, b, dim, spec, alpha, gain, clamp):
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.ref(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# CUDA path. The kernel needs dense tensors with identical strides; making them so happens
# outside the autograd Functions, so every tensor a Function saves is one of its inputs or
# outputs and stays connected to the graph for double backward.

def _is_dense(t):
    """Elements fill one block of memory in some dim order (e.g. contiguous or channels-last)."""
    expected = 1
    for d in sorted((d for d in range(t.ndim) if t.shape[d] != 1), key=t.stride):
        if t.stride(d) != expected:
            return False
        expected *= t.shape[d]
    return True


def _bias_act_cuda(plugin, x, b, dim, spec, alpha, gain, clamp):
    if not _is_dense(x):
        x = x.contiguous()
    if b is not None:
        b = b.contiguous()
    cfg = (plugin, dim, spec, alpha, gain, clamp)
    return _BiasActCuda.apply(x, b, cfg)


def _none(like):
    return like.new_empty([0])


def _match(t, like):
    """t laid out exactly like `like` (same strides); differentiable."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like).copy_(t)


def _sum_except(t, dim):
    return t.sum([i for i in range(t.ndim) if i != dim])


class _BiasActCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg):
        plugin, dim, spec, alpha, gain, clamp = cfg
        bb = b if b is not None else _none(x)
        y = plugin.bias_act(x, bb, _none(x), 0, spec.cuda_idx, dim, alpha, gain, clamp)
        if spec.grad_from == 'x':
            ctx.save_for_backward(x, bb)
        elif spec.grad_from == 'y' or clamp >= 0:
            ctx.save_for_backward(y, _none(x))
        else:
            ctx.save_for_backward(_none(x), _none(x))
        ctx.cfg = cfg
        ctx.has_bias = b is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        ref, bb = ctx.saved_tensors
        plugin, dim, spec, alpha, gain, clamp = ctx.cfg
        dx = db = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            if ref.numel() == 0:  # linear without clamp: the derivative is just the gain
                dx = dy * gain if gain != 1 else dy
            else:
                dx = _BiasActCudaGrad.apply(_match(dy, ref), ref, bb, ctx.cfg)
        if ctx.has_bias and ctx.needs_input_grad[1]:
            db = _sum_except(dx, dim)
        return dx, db, None


class _BiasActCudaGrad(torch.autograd.Function):
    """dx = dy * gain * act'(ref) * mask; its own backward gives the second derivatives."""

    @staticmethod
    def forward(ctx, dy, ref, bb, cfg):
        plugin, dim, spec, alpha, gain, clamp = cfg
        dx = plugin.bias_act(dy, bb, ref, 1, spec.cuda_idx, dim, alpha, gain, clamp)
        ctx.save_for_backward(dy if spec.has_2nd_grad else _none(dy), ref, bb)
        ctx.cfg = cfg
        return dx

    @staticmethod
    def backward(ctx, d_dx):
        dy, ref, bb = ctx.saved_tensors
        plugin, dim, spec, alpha, gain, clamp = ctx.cfg
        d_dx = _match(d_dx, ref)
        d_dy = d_ref = d_b = None
        if ctx.needs_input_grad[0]:  # dx is linear in dy
            d_dy = _BiasActCudaGrad.apply(d_dx, ref, bb, ctx.cfg)
        if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            # For y-based activations this is per unit of y; autograd chains it through y(x).
            d_ref = plugin.bias_act(_match(d_dx * dy, ref), bb, ref, 2, spec.cuda_idx, dim, alpha, gain, clamp)
            if spec.grad_from == 'x' and bb.numel() > 0 and ctx.needs_input_grad[2]:
                d_b = _sum_except(d_ref, dim)
        return d_dy, d_ref, d_b, None
