"""VGG16 with LPIPS weights, in the calling convention of NVIDIA's `vgg16.pt`.

NVIDIA ships the VGG16 detector used by precision/recall, PPL, the
projector and FastGAN's `--recon=lpips` loss as a TorchScript file, called as

    det(images, resize_images=True, return_lpips=False, return_features=False)

with uint8-range NCHW RGB images. This module is our own network of the same
architecture and interface, so that tests (and users without the file) can
build one with random weights, `torch.jit.script` it, save it and load it
through exactly the path the real file takes.

- `return_features=True` -> [N, 4096]: fc7 activations (after ReLU).
- `return_lpips=True` -> [N, D]: the five stage activations relu1_2, relu2_2,
  relu3_3, relu4_3 and relu5_3, each unit-normalised across channels at
  every pixel, scaled per channel by the square root of the (non-negative)
  LPIPS linear weights and by 1/sqrt(H*W), flattened and concatenated; so
  `(f1 - f2).square().sum(1)` is the LPIPS distance of the two images.
- neither flag -> the fc7 features, as with `return_features=True`.

Inputs are scaled to [0, 1] and normalised with ImageNet's mean and std. With
`resize_images`, inputs larger than 224x224 are area-resized to 224x224.
"""

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

# Convolution widths of VGG16 ('M' = 2x2 max pool), in torchvision's `features` order.
_VGG16_LAYOUT = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M']
# Indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
FEATURE_DIM = 4096
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16LPIPS(nn.Module):
    """VGG16 conv stack + fc6/fc7, with LPIPS linear weights on five stages."""

    def __init__(self):
        super().__init__()
        layers: List[nn.Module] = []
        cin = 3
        for item in _VGG16_LAYOUT:
            if item == 'M':
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(cin, int(item), kernel_size=3, padding=1))
                layers.append(nn.ReLU(inplace=False))
                cin = int(item)
        self.features = nn.Sequential(*layers)
        self.fc6 = nn.Linear(512 * 7 * 7, FEATURE_DIM)
        self.fc7 = nn.Linear(FEATURE_DIM, FEATURE_DIM)
        # LPIPS linear layers: one non-negative weight per channel of each tapped stage.
        self.lin0 = nn.Parameter(torch.ones(LPIPS_CHANNELS[0]))
        self.lin1 = nn.Parameter(torch.ones(LPIPS_CHANNELS[1]))
        self.lin2 = nn.Parameter(torch.ones(LPIPS_CHANNELS[2]))
        self.lin3 = nn.Parameter(torch.ones(LPIPS_CHANNELS[3]))
        self.lin4 = nn.Parameter(torch.ones(LPIPS_CHANNELS[4]))
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor, resize_images: bool = True, return_lpips: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError('expected uint8-range RGB images of shape [N, 3, H, W]')
        x = images.to(torch.float32)
        if resize_images and (x.shape[2] > 224 or x.shape[3] > 224):
            x = F.interpolate(x, size=(224, 224), mode='area')
        x = (x / 255 - self.mean) / self.std

        taps: List[torch.Tensor] = []
        index = 0
        for layer in self.features:
            x = layer(x)
            if index == 3 or index == 8 or index == 15 or index == 22 or index == 29:
                taps.append(x)
            index += 1
        if return_lpips:
            return self._lpips_vector(taps)

        x = F.adaptive_avg_pool2d(x, [7, 7]).flatten(1)
        x = F.relu(self.fc6(x))
        return F.relu(self.fc7(x))

    def _lpips_vector(self, taps: List[torch.Tensor]) -> torch.Tensor:
        lins = [self.lin0, self.lin1, self.lin2, self.lin3, self.lin4]
        parts: List[torch.Tensor] = []
        for i in range(len(taps)):
            f = taps[i]
            unit = f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            scale = lins[i].clamp(min=0).sqrt().view(1, -1, 1, 1) * (float(f.shape[2] * f.shape[3]) ** -0.5)
            parts.append((unit * scale).flatten(1))
        return torch.cat(parts, dim=1)


@torch.no_grad()
def make_random_vgg16_lpips(seed: int = 0) -> VGG16LPIPS:
    """VGG16LPIPS with He-normal random weights and non-negative random LPIPS weights, in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    net = VGG16LPIPS()
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            module.bias.copy_(0.01 * torch.randn(module.bias.shape, generator=gen))
    for lin in (net.lin0, net.lin1, net.lin2, net.lin3, net.lin4):
        lin.copy_(torch.rand(lin.shape, generator=gen) / lin.numel())
    return net.eval().requires_grad_(False)


def lpips_distance(det, a: torch.Tensor, b: torch.Tensor, resize_images: bool = False) -> torch.Tensor:
    """Per-image LPIPS distance between uint8-range batches `a` and `b` through detector `det`."""
    fa = det(a, resize_images=resize_images, return_lpips=True)
    fb = det(b, resize_images=resize_images, return_lpips=True)
    return (fa - fb).square().sum(dim=1)
