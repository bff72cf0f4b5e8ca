"""Encoder bodies and decoders: MLPs written as the documents write them, and conv pairs with a vector or a
spatial (C x H x W) latent. Encoder bodies map images (B, C, H, W) to features; a posterior head (posteriors.py)
maps features to (mu, logvar). Decoders map latents (N, D) to likelihood parameters (N, C, H, W)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "softplus": nn.Softplus,
    "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
}


def mlp(sizes: list[int], activation: str, last_activation: bool) -> nn.Sequential:
    """Linear layers sizes[0] -> sizes[1] -> ... with the activation between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if last_activation or i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoderBody(nn.Module):
    """(B, C, H, W) -> (B, hidden[-1]) features; with no hidden layers the features are the pixels."""

    def __init__(self, n_pixels: int, hidden: list[int], activation: str):
        super().__init__()
        self.net = mlp([n_pixels, *hidden], activation, last_activation=True)
        self.n_features = hidden[-1] if hidden else n_pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """(N, D) -> (N, C, H, W) likelihood parameters through the mirrored hidden widths."""

    def __init__(self, latent_dim: int, hidden: list[int], n_pixels: int, image_shape: tuple[int, int, int], activation: str):
        super().__init__()
        self.net = mlp([latent_dim, *reversed(hidden), n_pixels], activation, last_activation=False)
        self.image_shape = image_shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)


def padded_size(image_shape: tuple[int, int, int]) -> int:
    """Images are zero-padded to the next power of two (28 -> 32) so stride-2 layers halve them exactly."""
    return 2 ** math.ceil(math.log2(max(image_shape[1:])))


def conv_latent_size(image_shape: tuple[int, int, int], n_layers: int) -> int:
    """Height (= width) of the feature map after ``n_layers`` stride-2 convolutions; 0 if it vanishes."""
    return padded_size(image_shape) >> n_layers


class ConvEncoderBody(nn.Module):
    """(B, C, H, W) -> padded to S x S -> stride-2 convs (kernel 4) -> (B, ch[-1], s, s) feature map,
    flattened to (B, ch[-1]*s*s) unless ``spatial``."""

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], activation: str, spatial: bool):
        super().__init__()
        c, h, w = image_shape
        size = padded_size(image_shape)
        self.pad = ((size - w) // 2, size - w - (size - w) // 2, (size - h) // 2, size - h - (size - h) // 2)
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels[:-1]], channels):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
        self.net = nn.Sequential(*layers)
        self.spatial = spatial
        self.map_size = conv_latent_size(image_shape, len(channels))
        self.n_features = channels[-1] if spatial else channels[-1] * self.map_size**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(F.pad(x, self.pad))
        return h if self.spatial else h.flatten(1)


class ConvDecoder(nn.Module):
    """(N, D) -> feature map (N, ch[-1], s, s) -> stride-2 transposed convs -> cropped to (N, C, H, W).

    Vector latents enter through a linear layer; spatial latents (D = C_z*s*s) through a 3x3 conv."""

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], activation: str,
                 latent_dim: int, latent_channels: int | None):
        super().__init__()
        self.image_shape = image_shape
        s = conv_latent_size(image_shape, len(channels))
        self.map_shape = (channels[-1], s, s)
        self.latent_channels = latent_channels
        act = ACTIVATIONS[activation]
        if latent_channels is None:
            self.stem = nn.Sequential(nn.Linear(latent_dim, channels[-1] * s * s), act())
        else:
            self.stem = nn.Sequential(nn.Conv2d(latent_channels, channels[-1], 3, padding=1), act())
        ups: list[nn.Module] = []
        outs = [*reversed(channels[:-1]), image_shape[0]]
        for i, (c_in, c_out) in enumerate(zip(reversed(channels), outs)):
            ups.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                ups.append(act())
        self.net = nn.Sequential(*ups)
        size = padded_size(image_shape)
        _, h, w = image_shape
        self.crop = ((size - h) // 2, (size - w) // 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.latent_channels is None:
            h = self.stem(z).view(-1, *self.map_shape)
        else:
            s = self.map_shape[1]
            h = self.stem(z.view(-1, self.latent_channels, s, s))
        out = self.net(h)
        _, hh, ww = self.image_shape
        top, left = self.crop
        return out[:, :, top:top + hh, left:left + ww]
