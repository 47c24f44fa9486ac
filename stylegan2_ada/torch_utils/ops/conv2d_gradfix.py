"""2-D convolutions whose gradients are themselves differentiable custom ops.

Why this exists: the path-length regulariser differentiates the generator with
respect to its latents only and then back-propagates through that gradient.
Inside `no_weight_gradients()` the backward pass of these ops skips the weight
gradient entirely instead of computing it and throwing it away.

Why `enabled` defaults to True: on PyTorch 2.x the plain ops already support
double backward, so the custom path is not needed for correctness; it is what
makes `no_weight_gradients()` mean something, on every device (pure PyTorch,
one Python Function call per convolution). Set `enabled = False` for torch's
ops unchanged; `no_weight_gradients()` then has no effect.

Caveat, measured on torch 2.15: a custom Function's `needs_input_grad` is
static, so outside the context the custom path computes the weight gradient
whenever the weight requires grad, even under `autograd.grad(out, [x])`, where
torch's own conv asks for the input part only. So wrap every input-only
gradient pass (path length and R1 alike) in `no_weight_gradients()`: the
weights still get their gradient when the penalty is back-propagated outside
it. Only do so where the conv weights are plain parameters (StyleGAN2 trains
with non-fused modulation for this reason): a weight computed from the inputs
being differentiated would lose that gradient path.
"""

import collections
import contextlib
from typing import Optional

import torch
import torch.nn.functional as F

enabled = True                      # Use the custom ops (see module docstring).
weight_gradients_disabled = False   # Set by no_weight_gradients(); read at backward time.


@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Skip weight gradients of conv2d/conv_transpose2d run backward inside this block.

    The flag is read when backward runs, so a graph built inside the block and
    differentiated again outside it (path-length regulariser) still gives the
    weights their gradient in that second pass. Nestable; restores on exit.
    """
    global weight_gradients_disabled
    old = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = old


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """Drop-in for torch.nn.functional.conv2d."""
    if not _use_custom(input, weight, padding):
        return F.conv2d(input, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return _Conv.apply(input, weight, bias, _make_cfg(False, stride, padding, 0, dilation, groups))


def conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride=1,
                     padding=0, output_padding=0, groups: int = 1, dilation=1) -> torch.Tensor:
    """Drop-in for torch.nn.functional.conv_transpose2d (same argument order)."""
    if not _use_custom(input, weight, padding):
        return F.conv_transpose2d(input, weight, bias, stride=stride, padding=padding,
                                  output_padding=output_padding, groups=groups, dilation=dilation)
    return _Conv.apply(input, weight, bias, _make_cfg(True, stride, padding, output_padding, dilation, groups))


_Cfg = collections.namedtuple('_Cfg', 'transposed stride padding output_padding dilation groups')


def _pair(v):
    if isinstance(v, (tuple, list)):
        assert len(v) == 2, v
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _make_cfg(transposed, stride, padding, output_padding, dilation, groups):
    return _Cfg(bool(transposed), _pair(stride), _pair(padding), _pair(output_padding), _pair(dilation), int(groups))


def _use_custom(input, weight, padding):
    """Custom path only where it pays and is supported; else torch's own op."""
    if not enabled:
        return False
    if not (isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor)):
        return False
    if isinstance(padding, str):               # 'same'/'valid': leave to torch
        return False
    if input.ndim != 4 or weight.ndim != 4:    # unbatched input etc.
        return False
    if not (input.dtype.is_floating_point and weight.dtype.is_floating_point):
        return False
    if not torch.is_grad_enabled():            # no graph will be recorded
        return False
    return True


def _run_conv(x, w, cfg, bias=None):
    if cfg.transposed:
        return F.conv_transpose2d(x, w, bias, stride=cfg.stride, padding=cfg.padding,
                                  output_padding=cfg.output_padding, groups=cfg.groups, dilation=cfg.dilation)
    return F.conv2d(x, w, bias, stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation, groups=cfg.groups)


def _input_grad_cfg(cfg, input_shape, output_shape, weight_shape):
    """Config of the op that maps grad_output back to grad_input (the adjoint op)."""
    if cfg.transposed:  # adjoint of a transposed conv is a plain conv; its size always matches
        return cfg._replace(transposed=False, output_padding=(0, 0))
    # Adjoint of a conv is a transposed conv; output_padding recovers the rows/cols
    # that the strided forward dropped.
    op = []
    for i in range(2):
        natural = ((output_shape[i + 2] - 1) * cfg.stride[i] - 2 * cfg.padding[i]
                   + cfg.dilation[i] * (weight_shape[i + 2] - 1) + 1)
        op.append(input_shape[i + 2] - natural)
    return cfg._replace(transposed=True, output_padding=tuple(op))


class _Conv(torch.autograd.Function):
    """Forward conv (plain or transposed); backward expressed through _Conv/_ConvWeightGrad."""

    @staticmethod
    def forward(ctx, input, weight, bias, cfg):
        out = _run_conv(input, weight, cfg, bias)
        # The weight is kept even when only its gradient is wanted: the weight-grad
        # op reads its shape/layout, and holding a parameter costs no memory.
        ctx.save_for_backward(input if ctx.needs_input_grad[1] else None, weight)
        ctx.cfg = cfg
        ctx.input_shape = input.shape
        return out

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        cfg = ctx.cfg
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            icfg = _input_grad_cfg(cfg, ctx.input_shape, grad_output.shape, weight.shape)
            grad_input = _Conv.apply(grad_output, weight, None, icfg)
            assert grad_input.shape == ctx.input_shape, (grad_input.shape, ctx.input_shape)
        if ctx.needs_input_grad[1] and not weight_gradients_disabled:
            grad_weight = _ConvWeightGrad.apply(grad_output, input, weight.detach(), cfg)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(dim=[0, 2, 3])
        return grad_input, grad_weight, grad_bias, None


def _weight_grad(grad_output, input, weight, cfg):
    """dL/dweight via torch's convolution backward, asking for the weight part only
    (`weight` supplies shape and layout; its values are not used)."""
    _, gw, _ = torch.ops.aten.convolution_backward(
        grad_output, input, weight, None, list(cfg.stride), list(cfg.padding), list(cfg.dilation),
        cfg.transposed, list(cfg.output_padding), cfg.groups, [False, True, False])
    return gw


class _ConvWeightGrad(torch.autograd.Function):
    """Weight gradient as a function of (grad_output, input); bilinear, so its own
    backward is two convolutions with the incoming gradient used as the weight."""

    @staticmethod
    def forward(ctx, grad_output, input, weight, cfg):
        gw = _weight_grad(grad_output, input, weight, cfg)
        assert gw.shape == weight.shape, (gw.shape, weight.shape)
        ctx.save_for_backward(grad_output if ctx.needs_input_grad[1] else None,
                              input if ctx.needs_input_grad[0] else None)
        ctx.cfg = cfg
        ctx.input_shape = input.shape
        ctx.grad_output_shape = grad_output.shape
        return gw

    @staticmethod
    def backward(ctx, grad2_weight):
        grad_output, input = ctx.saved_tensors
        cfg = ctx.cfg
        grad2_grad_output = grad2_input = None
        if ctx.needs_input_grad[0]:   # forward op applied to input with grad2_weight as weight
            grad2_grad_output = _Conv.apply(input, grad2_weight, None, cfg)
            assert grad2_grad_output.shape == ctx.grad_output_shape
        if ctx.needs_input_grad[1]:   # adjoint op applied to grad_output with grad2_weight
            icfg = _input_grad_cfg(cfg, ctx.input_shape, ctx.grad_output_shape, grad2_weight.shape)
            grad2_input = _Conv.apply(grad_output, grad2_weight, None, icfg)
            assert grad2_input.shape == ctx.input_shape
        return grad2_grad_output, grad2_input, None, None
