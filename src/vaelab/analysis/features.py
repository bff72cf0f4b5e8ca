"""Which features the quality and memorisation analyses compare images in, chosen by one string:

- ``"classifier"``: the evaluation classifier's 128-d features (vaelab.analysis.classifier; needs labels);
- ``"contrastive"``: the contrastive network's 128-d features, trained without labels (vaelab.analysis.contrastive);
- ``"module:function"``: the user's extractor, images (N, C, H, W) in [0, 1] -> features (N, F);
- ``"inception:PATH"``: NVIDIA's TorchScript Inception-v3 (``inception-2015-12-05.pt``, the file StyleGAN's and
  clean-fid's FID use), 2048-d pool features: FD in these features is FID;
- ``"dinov2:PATH"``: a DINOv2 model saved with Hugging Face's ``save_pretrained`` (needs ``transformers``), its
  pooled output.
None (the default) is the classifier when the data has labels and the contrastive network when it has none. Nothing
is downloaded: a missing file or folder is a one-line error.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from vaelab.analysis.classifier import evaluation_classifier
from vaelab.analysis.contrastive import contrastive_network
from vaelab.errors import ConfigError

CHOICES = "'classifier', 'contrastive', 'module:function', 'inception:PATH' or 'dinov2:PATH'"
INCEPTION_SIZE, DINOV2_SIZE = 299, 224
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EXTERNAL_BATCH = 100


@dataclass
class Features:
    """A feature space: ``extract`` maps images (N, C, H, W) in [0, 1] to features (N, F) as a numpy array;
    ``kind`` is its short name for figure labels ("contrastive"), ``name`` the longer one for the JSON."""

    kind: str
    name: str
    extract: Callable[[torch.Tensor], np.ndarray]
    info: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """For axis labels: "contrastive features"."""
        return f"{self.kind} features"

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, **({"network": self.info} if self.info else {})}


def feature_space(data, features: str | Callable | None = None, *, root=None, log=None) -> Features:
    """The feature space ``features`` names (see the module), for dataset ``data``."""
    if callable(features):
        return Features("user", getattr(features, "__name__", "user features"), _as_numpy(features))
    choice = features or ("classifier" if data.labelled else "contrastive")
    if not isinstance(choice, str):
        raise ConfigError(f"features {features!r} is not a string or a callable; use {CHOICES}")
    if choice == "classifier":
        if not data.labelled:
            raise ConfigError(f"features 'classifier' need class labels and dataset {data.name!r} has none; use "
                              "features 'contrastive' (trained without labels) or another of " + CHOICES)
        model, info = evaluation_classifier(data, root=root, log=log)
        return Features("classifier", f"vaelab evaluation classifier ({info['test_accuracy']:.4f} test accuracy)",
                        lambda x: model.embed(x.float().cpu())[0].numpy(), info)
    if choice == "contrastive":
        model, info = contrastive_network(data, root=root, log=log)
        return Features("contrastive", f"vaelab contrastive network (NT-Xent {info['final_loss']:.3f}, no labels)",
                        lambda x: model.embed(x.float().cpu()).numpy(), info)
    prefix, _, rest = choice.partition(":")
    if prefix == "inception" and rest:
        return Features("inception", f"Inception-v3 pool features ({Path(rest).name})", inception_extractor(rest))
    if prefix == "dinov2" and rest:
        return Features("dinov2", f"DINOv2 pooled features ({Path(rest).name})", dinov2_extractor(rest))
    if ":" not in choice:
        raise ConfigError(f"features {choice!r} is not one of {CHOICES}")
    return Features("user", choice, _as_numpy(load_feature_extractor(choice)))


def load_feature_extractor(spec: str) -> Callable:
    """'package.module:function' -> the callable (images (N, C, H, W) in [0, 1] -> features (N, F))."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"feature extractor {spec!r} is not of the form 'module:function'")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load feature extractor {spec!r}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"feature extractor {spec!r} is a {type(fn).__name__}, not a function")
    return fn


def _as_numpy(fn: Callable) -> Callable[[torch.Tensor], np.ndarray]:
    def extract(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = fn(x)
        out = out.detach().cpu().double().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, np.float64)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ConfigError(f"the feature extractor returned shape {tuple(out.shape)} for {x.shape[0]} images; "
                              "expected (N, F)")
        return out
    return extract


def _three_channels(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ConfigError(f"{what} features need grey or RGB images, got {x.shape[1]} channels")
    return x


def _in_batches(x: torch.Tensor, features: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """features(batch) over batches of EXTERNAL_BATCH images (float, on the CPU), without gradients: x (N, C, H, W)
    -> (N, F)."""
    with torch.no_grad():
        batches = (x[i:i + EXTERNAL_BATCH].float().cpu() for i in range(0, x.shape[0], EXTERNAL_BATCH))
        return torch.cat([features(b) for b in batches])


def inception_extractor(path: str) -> Callable[[torch.Tensor], np.ndarray]:
    """NVIDIA's TorchScript Inception-v3 at ``path``: images in [0, 1], grey or RGB, resized to 299 x 299 and scaled
    to 0..255 as the network expects, -> 2048-d pool features (N, 2048)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"inception weights {path!r}: no such file; give the path of NVIDIA's TorchScript "
                          "inception-2015-12-05.pt (vaelab downloads nothing)")
    try:
        net = torch.jit.load(str(file), map_location="cpu").eval()
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"inception weights {path!r} are not a TorchScript file ({str(exc).splitlines()[0]}); give "
                          "NVIDIA's inception-2015-12-05.pt") from None

    def features(b: torch.Tensor) -> torch.Tensor:
        b = F.interpolate(_three_channels(b, "inception"), size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                          align_corners=False)
        return net(b * 255, return_features=True)

    def extract(x: torch.Tensor) -> np.ndarray:
        f = _in_batches(x, features)
        if f.ndim != 2:
            raise ConfigError(f"inception weights {path!r} gave features of shape {tuple(f.shape)}, not (N, 2048): "
                              "is it NVIDIA's inception-2015-12-05.pt?")
        return f.double().numpy()
    return extract


def dinov2_extractor(path: str) -> Callable[[torch.Tensor], np.ndarray]:
    """A DINOv2 model saved with ``save_pretrained`` in folder ``path`` (loaded with ``transformers``, offline):
    images in [0, 1], grey or RGB, resized to 224 x 224 and ImageNet-normalised -> its pooled output (N, hidden)."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(f"dinov2 model {path!r}: no config.json there; give a folder written by Hugging Face's "
                          "save_pretrained (vaelab downloads nothing)")
    try:
        from transformers import AutoModel
    except ImportError:
        raise ConfigError("dinov2 features need the transformers package: pip install transformers") from None
    try:
        net = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"dinov2 model {path!r} cannot be loaded: {str(exc).splitlines()[0]}") from None
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def features(b: torch.Tensor) -> torch.Tensor:
        b = F.interpolate(_three_channels(b, "dinov2"), size=(DINOV2_SIZE, DINOV2_SIZE), mode="bicubic",
                          align_corners=False)
        return net(pixel_values=(b - mean) / std).pooler_output

    def extract(x: torch.Tensor) -> np.ndarray:
        return _in_batches(x, features).double().numpy()
    return extract
