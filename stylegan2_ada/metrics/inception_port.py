"""Our PyTorch port of the FID Inception-v3 network, for pytorch-fid's weights.

pytorch-fid publishes the 2015-12-05 TensorFlow Inception graph that FID is
defined on as a PyTorch state dict, `pt_inception-2015-12-05-6726825d.pth`.
It is the same network as NVIDIA's TorchScript `inception-2015-12-05.pt`, so a
user who holds either file can compute the same statistics. This module
rebuilds that network with our own code and the parameter names of the file
(so it loads strictly) and wraps it in the calling convention of NVIDIA's
detector:

    det = load_pytorch_fid_inception('pt_inception-2015-12-05-6726825d.pth', device)
    feats = det(images_uint8, return_features=True)   # [N, 2048] pool3 features
    probs = det(images_uint8)                         # [N, 1008] softmax
    probs = det(images_uint8, no_output_bias=True)    # softmax of fc without its bias (IS)

Input handling follows pytorch-fid: uint8-range NCHW -> [0, 1] -> bilinear
resize to 299x299 (align_corners=False) -> [-1, 1].

The network differs from torchvision's ImageNet Inception-v3 in the ways the TF
graph does: 1008 output classes, average pools that ignore padding
(count_include_pad=False) in the pool branches of the A, C and first E blocks,
and a max pool in the pool branch of the last E block.
"""

import os
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

PYTORCH_FID_BASENAME = 'pt_inception-2015-12-05-6726825d.pth'
PYTORCH_FID_WEIGHTS_URL = f'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PYTORCH_FID_BASENAME}'

FEATURE_DIM = 2048
NUM_CLASSES = 1008
INPUT_SIZE = 299

# Building blocks. Attribute names are those of the weights file.


class ConvBN(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, running statistics) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3_no_pad(x):
    # 3x3 average whose border windows divide by the pixels they actually cover.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class MixedA(nn.Module):
    """35x35 block: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avg->1x1."""

    def __init__(self, cin: int, pool_ch: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_ch, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg3_no_pad(x))
        return torch.cat([a, b, c, d], dim=1)


class ReductionB(nn.Module):
    """35x35 -> 17x17: strided 3x3 | 1x1->3x3->strided 3x3 | strided max pool."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = F.max_pool2d(x, 3, stride=2)
        return torch.cat([a, b, c], dim=1)


class MixedC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 and 7x1)."""

    def __init__(self, cin: int, mid: int):
        super().__init__()
        row, col = (1, 7), (7, 1)
        prow, pcol = (0, 3), (3, 0)
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, mid, 1)
        self.branch7x7_2 = ConvBN(mid, mid, row, padding=prow)
        self.branch7x7_3 = ConvBN(mid, 192, col, padding=pcol)
        self.branch7x7dbl_1 = ConvBN(cin, mid, 1)
        self.branch7x7dbl_2 = ConvBN(mid, mid, col, padding=pcol)
        self.branch7x7dbl_3 = ConvBN(mid, mid, row, padding=prow)
        self.branch7x7dbl_4 = ConvBN(mid, mid, col, padding=pcol)
        self.branch7x7dbl_5 = ConvBN(mid, 192, row, padding=prow)
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        c = self.branch7x7dbl_3(self.branch7x7dbl_2(c))
        c = self.branch7x7dbl_5(self.branch7x7dbl_4(c))
        d = self.branch_pool(_avg3_no_pad(x))
        return torch.cat([a, b, c, d], dim=1)


class ReductionD(nn.Module):
    """17x17 -> 8x8: 1x1->strided 3x3 | 1x1->1x7->7x1->strided 3x3 | strided max pool."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_1(x)
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b)))
        c = F.max_pool2d(x, 3, stride=2)
        return torch.cat([a, b, c], dim=1)


class MixedE(nn.Module):
    """8x8 block whose 3x3 branches split into parallel 1x3 and 3x1 outputs.

    `max_pool_branch` selects the pool of the pool branch: the TF graph's first
    E block averages (ignoring padding), its last one takes the maximum.
    """

    def __init__(self, cin: int, max_pool_branch: bool):
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], dim=1)
        u = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(u), self.branch3x3dbl_3b(u)], dim=1)
        if self.max_pool_branch:
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pooled = _avg3_no_pad(x)
        d = self.branch_pool(pooled)
        return torch.cat([a, b, c, d], dim=1)

# The whole network.


class FIDInceptionPort(nn.Module):
    """FID Inception-v3 with NVIDIA's detector calling convention.

    forward(images, return_features=False, use_fp16=False, no_output_bias=False)
      images: [N, 3, H, W] (or [N, 1, H, W], repeated to RGB), uint8 or float in [0, 255].
      return_features=True  -> [N, 2048] pool3 features.
      otherwise             -> [N, 1008] softmax probabilities; with
                               no_output_bias=True the fc bias is left out
                               before the softmax (the original Inception Score).
      use_fp16 runs the convolutions under float16 autocast on CUDA (ignored on CPU).
    """

    def __init__(self):
        super().__init__()
        # Stem: 299 -> 149 -> 147 -> 147 -> (pool) 73 -> 73 -> 71 -> (pool) 35.
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        # 35x35.
        self.Mixed_5b = MixedA(192, pool_ch=32)
        self.Mixed_5c = MixedA(256, pool_ch=64)
        self.Mixed_5d = MixedA(288, pool_ch=64)
        # 17x17.
        self.Mixed_6a = ReductionB(288)
        self.Mixed_6b = MixedC(768, mid=128)
        self.Mixed_6c = MixedC(768, mid=160)
        self.Mixed_6d = MixedC(768, mid=160)
        self.Mixed_6e = MixedC(768, mid=192)
        # 8x8.
        self.Mixed_7a = ReductionD(768)
        self.Mixed_7b = MixedE(1280, max_pool_branch=False)
        self.Mixed_7c = MixedE(2048, max_pool_branch=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8-range NCHW -> float32 in [-1, 1] at 299x299 (pytorch-fid's input handling)."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f'expected images of shape [N, 3, H, W], got {list(images.shape)}')
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        x = images.to(torch.float32) / 255
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode='bilinear', align_corners=False)
        return 2 * x - 1

    def pool_features(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared [N, 3, 299, 299] in [-1, 1] -> [N, 2048]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, images, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False):
        x = self.prepare(images)
        if use_fp16 and x.is_cuda:
            with torch.autocast('cuda', dtype=torch.float16):
                feats = self.pool_features(x)
            feats = feats.float()
        else:
            feats = self.pool_features(x)
        if return_features:
            return feats
        logits = F.linear(feats, self.fc.weight, None if no_output_bias else self.fc.bias)
        return F.softmax(logits, dim=1)

# Loading and random weights.


def load_pytorch_fid_inception(path_or_file, device=torch.device('cpu')) -> FIDInceptionPort:
    """Load pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a path or a binary
    file object) into our port, strictly, and return it in eval mode on `device`."""
    name = path_or_file if isinstance(path_or_file, (str, os.PathLike)) else getattr(path_or_file, 'name', '<file>')
    try:
        state = torch.load(path_or_file, map_location='cpu', weights_only=True)
    except Exception as err:
        raise ValueError(f'cannot read {name} as a PyTorch state dict ({PYTORCH_FID_BASENAME} format): {err}') from err
    if not isinstance(state, dict):
        raise ValueError(f'{name}: expected a state dict of the FID Inception network, got {type(state).__name__}')
    net = FIDInceptionPort()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f'{name} does not hold the FID Inception weights ({PYTORCH_FID_BASENAME}): {err}') from err
    return net.eval().requires_grad_(False).to(device)


def _smooth_noise_images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Image-like uint8-range test inputs: low-resolution noise, upsampled."""
    low = torch.rand([n, 3, 8, 8], generator=generator) * 255
    return F.interpolate(low, size=(size, size), mode='bicubic', align_corners=False).clamp(0, 255)


@torch.no_grad()
def make_random_fid_inception(seed: int = 0, calibrate: bool = True) -> FIDInceptionPort:
    """The port with random weights whose activations stay in a sensible range.

    Convolutions get He-normal weights; batch-norm running statistics are then
    measured on a small batch of image-like inputs (train-mode pass with a
    cumulative average), so that every layer sees roughly unit-scale inputs
    and the 2048-d features are neither vanishing nor exploding. Saving
    `state_dict()` gives a file in pytorch-fid's format.
    """
    gen = torch.Generator().manual_seed(seed)
    net = FIDInceptionPort()
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=gen))
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
            module.running_mean.zero_()
            module.running_var.fill_(1)
        elif isinstance(module, nn.Linear):
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / module.in_features ** 0.5)
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    if calibrate:
        bns: List[nn.BatchNorm2d] = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one batch sets the statistics
        net.train()
        net.pool_features(net.prepare(_smooth_noise_images(2, 64, gen)))
        for bn in bns:
            bn.momentum = 0.1
            bn.num_batches_tracked.zero_()
    return net.eval().requires_grad_(False)
