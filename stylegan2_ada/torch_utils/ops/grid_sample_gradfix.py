"""Bilinear grid_sample (zeros padding, align_corners=False) with a working
second derivative, needed by R1 when images pass the augment pipe before D.

Why two paths: torch releases differ. Some differentiate their own grid_sample
twice; others raise "derivative for aten::grid_sampler_2d_backward is not
implemented". We probe the installed torch once per device type (does its
double backward run, and does it agree with ours?) and delegate to it when it
passes; otherwise our own Function is used: first-order backward through
torch's fused kernel, and, when a graph of the gradient is requested
(create_graph=True), a gather/scatter formulation in plain differentiable ops
that autograd can differentiate any number of times.

`enabled = False` bypasses all of this and calls torch's op as is.
`native_double_backward` forces the choice (True/False); None means probe.
"""

import torch
import torch.nn.functional as F

enabled = True
native_double_backward = None   # None: decide by probing; True/False: force.
_probe_cache = {}               # device type -> bool


def grid_sample(input, grid):
    """F.grid_sample(input, grid, 'bilinear', 'zeros', align_corners=False), twice differentiable."""
    if enabled and _use_own_path(input):
        return _GridSample.apply(input, grid)
    return F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


def _use_own_path(input):
    if not torch.is_grad_enabled():   # no graph recorded: nothing to fix
        return False
    if native_double_backward is not None:
        return not native_double_backward
    dev = input.device.type
    if dev not in _probe_cache:
        _probe_cache[dev] = _native_double_backward_works(input.device)
    return not _probe_cache[dev]

# Reference formulation in plain ops (differentiable to any order).


def _corners(input, grid):
    """Four bilinear taps: list of (flat index [N,P], weight [N,P], mask [N,P]),
    plus d(weight)/d(ix), d(weight)/d(iy) per tap and the grid->pixel scales."""
    N, C, H, W = input.shape
    gx = grid[..., 0].reshape(N, -1)
    gy = grid[..., 1].reshape(N, -1)
    ix = ((gx + 1) * W - 1) / 2   # align_corners=False: -1/+1 are the outer pixel edges
    iy = ((gy + 1) * H - 1) / 2
    x0 = torch.floor(ix)
    y0 = torch.floor(iy)
    fx = ix - x0
    fy = iy - y0
    taps = []
    for dy in (0, 1):
        wy = fy if dy else 1 - fy
        dwy = 1 if dy else -1
        for dx in (0, 1):
            wx = fx if dx else 1 - fx
            dwx = 1 if dx else -1
            xi = x0 + dx
            yi = y0 + dy
            mask = ((xi >= 0) & (xi <= W - 1) & (yi >= 0) & (yi <= H - 1)).to(input.dtype)
            idx = (yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)).long()
            taps.append((idx, wx * wy * mask, dwx * wy * mask, wx * dwy * mask))
    return taps, W / 2, H / 2


def _gather(input, idx):
    N, C = input.shape[:2]
    return input.reshape(N, C, -1).gather(2, idx[:, None, :].expand(N, C, idx.shape[1]))


def reference_grid_sample(input, grid):
    """Bilinear sampling by explicit gathers; used by the probe and the tests."""
    N, C = input.shape[:2]
    taps, _, _ = _corners(input, grid)
    out = sum(_gather(input, idx) * w[:, None, :] for idx, w, _, _ in taps)
    return out.reshape(N, C, *grid.shape[1:3])


def reference_grid_sample_backward(grad_output, input, grid):
    """(grad_input, grad_grid) of reference_grid_sample, written out so that autograd
    differentiates it with respect to grad_output, input and grid."""
    N, C, H, W = input.shape
    taps, sx, sy = _corners(input, grid)
    go = grad_output.reshape(N, C, -1)
    grad_input = torch.zeros_like(input).reshape(N, C, -1)
    dout_dix = 0
    dout_diy = 0
    for idx, w, dwdx, dwdy in taps:
        grad_input = grad_input.scatter_add(2, idx[:, None, :].expand_as(go), go * w[:, None, :])
        v = _gather(input, idx)
        dout_dix = dout_dix + v * dwdx[:, None, :]
        dout_diy = dout_diy + v * dwdy[:, None, :]
    gx = (go * dout_dix).sum(1) * sx
    gy = (go * dout_diy).sum(1) * sy
    grad_grid = torch.stack([gx, gy], dim=-1).reshape(grid.shape)
    return grad_input.reshape(input.shape), grad_grid



class _GridSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid):
        assert input.ndim == 4 and grid.ndim == 4 and grid.shape[-1] == 2, (input.shape, grid.shape)
        assert input.shape[0] == grid.shape[0], (input.shape, grid.shape)
        ctx.save_for_backward(input, grid)
        return F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)

    @staticmethod
    def backward(ctx, grad_output):
        input, grid = ctx.saved_tensors
        need_in, need_grid = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():
            # create_graph=True: the gradient itself will be differentiated.
            grad_input, grad_grid = reference_grid_sample_backward(grad_output, input, grid)
        else:
            # interpolation_mode 0 = bilinear, padding_mode 0 = zeros.
            grad_input, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                grad_output, input, grid, 0, 0, False, [need_in, need_grid])
        return (grad_input if need_in else None), (grad_grid if need_grid else None)



def _native_double_backward_works(device):
    """Capability probe: torch's second derivative runs and matches ours."""
    try:
        with torch.inference_mode(False), torch.enable_grad():
            gen = torch.Generator().manual_seed(123)
            x = torch.randn([1, 2, 3, 4], generator=gen, dtype=torch.float64).to(device)
            g = (torch.rand([1, 2, 3, 2], generator=gen, dtype=torch.float64) * 2.4 - 1.2).to(device)
            go = torch.randn([1, 2, 2, 3], generator=gen, dtype=torch.float64).to(device)
            u = torch.randn([1, 2, 3, 4], generator=gen, dtype=torch.float64).to(device)
            v = torch.randn([1, 2, 3, 2], generator=gen, dtype=torch.float64).to(device)

            def second(sample):
                xx = x.clone().requires_grad_()
                gg = g.clone().requires_grad_()
                gi, ggr = torch.autograd.grad(sample(xx, gg), [xx, gg], go, create_graph=True)
                return torch.autograd.grad((gi * u).sum() + (ggr * v).sum(), [xx, gg])

            native = second(lambda a, b: F.grid_sample(a, b, mode='bilinear', padding_mode='zeros',
                                                       align_corners=False))
            ours = second(reference_grid_sample)
            return all(torch.allclose(a, b, rtol=1e-6, atol=1e-8) for a, b in zip(native, ours))
    except (RuntimeError, NotImplementedError):
        return False
