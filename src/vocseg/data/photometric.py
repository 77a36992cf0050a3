"""mmsegmentation's ``PhotoMetricDistortion`` as a ``torchvision.transforms.v2`` transform, on the image only.

Per sample, in this order, each step applied with probability ``p`` (0.5)::

    brightness  x + b,          b ~ U(-32, 32) on the 0..255 scale
    contrast    x * a,          a ~ U(0.5, 1.5)       (here, or after hue: a fair coin decides)
    saturation  S * a in HSV,   a ~ U(0.5, 1.5)
    hue         H + d in HSV,   d ~ U(-18, 18) in OpenCV's 0..180 hue units, i.e. +-36 degrees
    contrast    (if not done above)

with the image clipped to the valid range after every step, as mmsegmentation does. Contrast is a plain
multiplication, as in mmsegmentation (torchvision's ``ColorJitter`` instead blends toward the grey mean).
Small deliberate differences: the image stays float between steps and is rounded once at the end
(mmsegmentation truncates to uint8 after every step, darkening by about half a level per step), and the
hue shift is drawn from a continuous, symmetric range (mmsegmentation draws an integer in [-18, 17]).

Masks (``tv_tensors.Mask``) and any other non-image input pass through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..errors import VocsegError

OPENCV_HUE_RANGE = 180.0  # mmsegmentation's hue_delta is in OpenCV's uint8 hue units: 180 per full turn


# Written with arithmetic only: on CPU, torch.where, masked_fill and max-with-indices over the channel
# dimension cost many times an elementwise op, and this runs on every training crop in the loader workers,
# where it dominated a crop's preparation (docs/benchmarks.md, section (h); benchmarks/bench_photometric.py).
_TINY = 1e-12  # guards the divisions: pixels where it acts have a zero numerator
_SECTOR_OFFSETS = (5.0, 3.0, 1.0)  # R, G, B in the hexcone formula of hsv_to_rgb


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """Float RGB in [0, 1], channels at dim -3, to HSV with all three of H (in turns), S and V in [0, 1]."""
    r, g, b = rgb.unbind(-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    delta = maxc - torch.minimum(torch.minimum(r, g), b)
    s = delta / maxc.clamp(min=_TINY)  # black: 0 / tiny = 0
    # Which channel is the maximum (red wins ties, then green, as colorsys does), as 0/1 factors.
    is_r = r == maxc
    is_g = (g == maxc) & ~is_r
    is_b = ~(is_r | is_g)
    sixths = (g - b) * is_r + (b - r + 2.0 * delta) * is_g + (r - g + 4.0 * delta) * is_b
    h = sixths / (6.0 * delta).clamp(min=_TINY)  # grey pixels: 0 / tiny = hue 0
    return torch.stack((h - h.floor(), s, maxc), dim=-3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`: channel n is V - V S clamp(min(k, 4 - k), 0, 1) with
    k = (n + 6 H) mod 6 and n = 5, 3, 1 for R, G, B (the sector formula of ``colorsys``, without branches)."""
    h, s, v = hsv.unbind(-3)
    offsets = torch.tensor(_SECTOR_OFFSETS, dtype=hsv.dtype, device=hsv.device).view(3, 1, 1)
    k = h.unsqueeze(-3) * 6.0 + offsets
    k = k - 6.0 * torch.floor(k / 6.0)
    k = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return v.unsqueeze(-3) - (v * s).unsqueeze(-3) * k


@dataclass(frozen=True)
class PhotometricParams:
    """One draw of the distortion; neutral values (0, 1, 1, 0) mean "step not applied"."""

    brightness: float = 0.0  # added, on the 0..255 scale
    contrast: float = 1.0  # multiplier
    contrast_first: bool = True  # contrast before saturation/hue, else after
    saturation: float = 1.0  # multiplier of HSV saturation
    hue: float = 0.0  # added to the hue, in turns (1.0 = 360 degrees)


def _distort_unit(x: Tensor, params: PhotometricParams) -> Tensor:
    """The steps on a float RGB image in [0, 1], clipped after each, as mmsegmentation does. Changes ``x``
    in place (the caller passes its own copy): no new 3 MB tensor per step for a 512 x 512 crop."""
    if params.brightness != 0.0:
        x.add_(params.brightness / 255.0).clamp_(0.0, 1.0)
    if params.contrast_first and params.contrast != 1.0:
        x.mul_(params.contrast).clamp_(0.0, 1.0)
    if params.saturation != 1.0 or params.hue != 0.0:
        # Saturation and hue are adjacent in both orders, so one HSV round trip serves both.
        hsv = rgb_to_hsv(x)
        hsv[..., 0, :, :].add_(params.hue)  # hsv_to_rgb takes any hue: it wraps it into one turn itself
        hsv[..., 1, :, :].mul_(params.saturation).clamp_(0.0, 1.0)
        x = hsv_to_rgb(hsv).clamp_(0.0, 1.0)
    if not params.contrast_first and params.contrast != 1.0:
        x.mul_(params.contrast).clamp_(0.0, 1.0)
    return x


def photometric_distort(image: Tensor, params: PhotometricParams) -> Tensor:
    """Apply ``params`` to an RGB image tensor (..., 3, H, W): uint8 (0..255) or float (0..1), same dtype out."""
    if image.ndim < 3 or image.shape[-3] != 3:
        raise VocsegError(f"photometric distortion needs RGB images (..., 3, H, W), got shape {tuple(image.shape)}")
    if params == PhotometricParams(contrast_first=params.contrast_first):
        return image  # nothing drawn: identity, without a float round trip
    if image.dtype == torch.uint8:
        out = _distort_unit(image.to(torch.float32).mul_(1.0 / 255.0), params)
        return out.mul_(255.0).round_().to(torch.uint8)
    if image.is_floating_point():
        return _distort_unit(image.to(torch.float32, copy=True), params).to(image.dtype)
    raise VocsegError(f"photometric distortion needs a uint8 or float image, got dtype {image.dtype}")


class PhotometricDistortion(v2.Transform):
    """mmsegmentation's ``PhotoMetricDistortion`` (see the module docstring) for ``torchvision.transforms.v2``.

    Random draws use torch's generator, so ``torch.manual_seed`` and DataLoader worker seeding make it
    reproducible. Place it after the geometric steps and before ``ToDtype``/``Normalize``; it works on uint8
    (0..255) and float (0..1) images and PIL images alike."""

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
        p: float = 0.5,
    ) -> None:
        super().__init__()
        for name, (lo, hi) in (("contrast_range", contrast_range), ("saturation_range", saturation_range)):
            if not 0 <= lo <= hi:
                raise VocsegError(f"PhotometricDistortion {name} must satisfy 0 <= low <= high, got {(lo, hi)}")
        if not 0 <= brightness_delta <= 255 or not 0 <= hue_delta <= OPENCV_HUE_RANGE / 2:
            raise VocsegError(
                f"PhotometricDistortion brightness_delta must be in [0, 255] and hue_delta in [0, 90], "
                f"got {brightness_delta} and {hue_delta}"
            )
        if not 0.0 <= p <= 1.0:
            raise VocsegError(f"PhotometricDistortion p is a probability in [0, 1], got {p}")
        self.brightness_delta, self.hue_delta, self.p = float(brightness_delta), float(hue_delta), float(p)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))

    def _coin(self) -> bool:
        return bool(torch.rand(()) < self.p)

    @staticmethod
    def _uniform(lo: float, hi: float) -> float:
        return float(torch.empty(()).uniform_(lo, hi)) if hi > lo else lo

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        # One draw per call, shared by every image in the sample, in mmsegmentation's order.
        d, hd = self.brightness_delta, self.hue_delta
        brightness = self._uniform(-d, d) if self._coin() else 0.0
        contrast_first = bool(torch.rand(()) < 0.5)
        contrast = self._uniform(*self.contrast_range) if self._coin() else 1.0
        saturation = self._uniform(*self.saturation_range) if self._coin() else 1.0
        hue = self._uniform(-hd, hd) / OPENCV_HUE_RANGE if self._coin() else 0.0
        return {"params": PhotometricParams(brightness, contrast, contrast_first, saturation, hue)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, PIL.Image.Image):
            if inpt.mode != "RGB":  # v2 takes every PIL image for an image; a PIL mask would be recoloured
                raise VocsegError(
                    f"PhotometricDistortion needs RGB PIL images, got mode {inpt.mode!r}; pass masks as tv_tensors.Mask"
                )
            return F.to_pil_image(photometric_distort(F.pil_to_tensor(inpt), params["params"]))
        if isinstance(inpt, tv_tensors.Image):
            return tv_tensors.wrap(photometric_distort(inpt.as_subclass(Tensor), params["params"]), like=inpt)
        if type(inpt) is torch.Tensor:  # a plain tensor is an image to v2 (it is only passed here when it is)
            return photometric_distort(inpt, params["params"])
        return inpt  # masks, boxes, videos, anything else: untouched
