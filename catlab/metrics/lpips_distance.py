"""Perceptual distances: LPIPS (alex, vgg, squeeze) from the `lpips` package, and `lpips-domain`.

    d = lpips_distance("lpips-alex")          # UserError (one line) when the AlexNet file is absent
    d(a, b)                                   # a, b: (B, 3, H, W) float in [-1, 1] -> (B,)
    PERCEPTUAL["lpips-domain"](a, b)          # lazy: built on first call, differentiable in a and b

LPIPS trunks are torchvision's ImageNet weights, read from torchvision's cache
($TORCH_HOME/hub/checkpoints/<file>, see TRUNK_FILES) or from a path you give; they are never
downloaded. The calibration (linear) layers ship inside the lpips wheel.

Minimum sizes (smaller inputs are upsampled bilinearly, align_corners=False, to this size first):
- alex: 32 px (AlexNet's stride-4 11x11 conv and two max-pools need >= 31 px; at 32 the last layers are 1x1).
- vgg: 32 px (four 2x2 pools before conv5_3, which is then 2x2; below 16 px the last layer vanishes).
- squeeze: 32 px (stride-2 conv and three ceil-mode pools leave 1x1 at the last fire modules).

lpips-domain is the LPIPS formula over the domain extractor's 4 conv layers (catlab.metrics.extractor):
each layer's features are unit-normalised over channels at every location (lpips.normalize_tensor), the
squared difference is summed over channels and averaged over space, and the layers are summed with
uniform weights (LPIPS's `lpips=False` baseline). Inputs of any size are resized to 32 px. d(x, x) = 0
and d(a, b) = d(b, a) exactly.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from catlab.errors import UserError
from catlab.metrics.extractor import load_domain_extractor

TRUNK_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
               "squeeze": "squeezenet1_1-b8a52dc0.pth"}
MIN_SIZE = {"alex": 32, "vgg": 32, "squeeze": 32}


# ---- building blocks ------------------------------------------------------------------------------
def normalize_channels(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """(B, C, H, W) -> unit L2 norm over C at each location (the LPIPS normalisation)."""
    return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + eps)


def upsample_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling to size x size when smaller; identity otherwise."""
    if x.shape[-1] >= size and x.shape[-2] >= size:
        return x
    return F.interpolate(x, size=(max(size, x.shape[-2]), max(size, x.shape[-1])), mode="bilinear",
                         align_corners=False)


def trunk_weights_path(net: str, weights: str | Path | None = None) -> Path:
    """The torchvision ImageNet weights file of an LPIPS trunk: the given path, else torchvision's cache."""
    if weights is not None:
        if not Path(weights).is_file():
            raise UserError(f"LPIPS {net} trunk weights must be an existing file, but got weights={str(weights)!r}")
        return Path(weights)
    path = Path(torch.hub.get_dir()) / "checkpoints" / TRUNK_FILES[net]
    if not path.is_file():
        raise UserError(f"lpips-{net} needs the torchvision {net} weights {TRUNK_FILES[net]}: put the file at "
                        f"{path} or pass its path (weights=...), but got no such file")
    return path


def load_trunk(model: nn.Module, path: str | Path) -> None:
    """Copy torchvision `features.<i>.*` tensors into lpips' `net.slice<k>.<i>.*` (strict on the trunk)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    slot = {}                                                         # torchvision index -> lpips prefix
    for slice_name, sl in model.net.named_children():
        for idx, _ in sl.named_children():
            slot[idx] = f"{slice_name}.{idx}"
    mapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "features" and parts[1] in slot:
            mapped[f"{slot[parts[1]]}.{'.'.join(parts[2:])}"] = value
    missing = set(model.net.state_dict()) - set(mapped)
    if missing:
        raise UserError(f"LPIPS trunk weights must be torchvision's {model.pnet_type} file, but got {path} "
                        f"(missing {sorted(missing)[0]})")
    model.net.load_state_dict(mapped, strict=True)


def build_lpips(net: str, weights: str | Path | None = None, random_trunk: bool = False) -> nn.Module:
    """lpips.LPIPS(net) with the calibrated linear layers and a trunk loaded from disk (never downloaded).

    random_trunk=True keeps lpips' random trunk (pnet_rand=True): for tests only, not a metric.
    """
    import lpips
    path = None if random_trunk else trunk_weights_path(net, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                               # torchvision's `pretrained` deprecation
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    if path is not None:
        load_trunk(model, path)
    return model.requires_grad_(False).eval()


# ---- distances ------------------------------------------------------------------------------------
class LPIPSDistance(nn.Module):
    """d(a, b) -> (B,) with an lpips.LPIPS module; inputs below min_size are upsampled first."""

    def __init__(self, model: nn.Module, min_size: int):
        super().__init__()
        self.model, self.min_size = model, min_size

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.model.to(a.device)
        a, b = upsample_to(a, self.min_size), upsample_to(b, self.min_size)   # (B, 3, >=m, >=m)
        return self.model(a, b).flatten()                                # (B,)


class DomainLPIPS(nn.Module):
    """LPIPS formula over the domain extractor's layers (uniform layer weights). d(a, b) -> (B,).

    weights: a domain_extractor.pt (default: the packaged one). The frozen extractor is shared per device.
    """

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        self.weights = weights
        self.layers(torch.zeros(1, 3, 4, 4))                          # load now: a missing file fails early

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        return load_domain_extractor(self.weights, x.device).layers(x)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.layers(a), self.layers(b)                       # 4 x (B, C_l, H_l, W_l)
        total = 0
        for xa, xb in zip(fa, fb):
            diff = (normalize_channels(xa) - normalize_channels(xb)) ** 2
            total = total + diff.sum(dim=1).mean(dim=(1, 2))           # (B,)
        return total


def lpips_distance(name: str, weights: str | Path | None = None, random_trunk: bool = False) -> nn.Module:
    """Build the perceptual distance `name` (see PERCEPTUAL): a callable d(a, b) -> (B,).

    weights: lpips-alex/vgg/squeeze: the torchvision trunk file (default: torchvision's cache);
        lpips-domain: a domain_extractor.pt (default: the packaged one).
    random_trunk: tests only; an LPIPS with a random trunk (lpips' pnet_rand=True).
    """
    if name not in PERCEPTUAL:
        raise UserError(f"distance must be one of {', '.join(PERCEPTUAL)}, but got distance={name!r}")
    if name == "lpips-domain":
        return DomainLPIPS(weights)
    net = name.split("-", 1)[1]
    return LPIPSDistance(build_lpips(net, weights, random_trunk), MIN_SIZE[net])


class LazyDistance:
    """A registry entry: builds lpips_distance(name) on first call, then reuses it."""

    def __init__(self, name: str):
        self.name, self._fn = name, None

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self._fn is None:
            self._fn = lpips_distance(self.name)
        return self._fn(a, b)

    def __repr__(self) -> str:
        return f"LazyDistance({self.name!r})"


perceptual_distance = lpips_distance      # the name catlab.losses.get_distance uses

PERCEPTUAL: dict[str, LazyDistance] = {
    name: LazyDistance(name) for name in ("lpips-alex", "lpips-vgg", "lpips-squeeze", "lpips-domain")}
DISTANCES = PERCEPTUAL                    # the name analysis.misalignment looks up in catlab.metrics
