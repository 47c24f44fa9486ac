"""Networks that plug into the harness by class name.

`kdgan_plugins.networks.fastgan.Generator` / `.Discriminator`: FastGAN
(Liu et al., 2021) with the StyleGAN2-ADA constructor signatures.
"""
