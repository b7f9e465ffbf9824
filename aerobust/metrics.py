"""Per-image similarity metrics: a configurable MS-SSIM that is valid on 28-64 px images, and L2.

Every metric takes two image batches ``(N, C, H, W)`` and returns one score per image ``(N,)``,
stays differentiable and runs on the device of its inputs.

MS-SSIM presets (``MSSSIM_PRESETS``; ``aerobust list metrics`` lists them). The audit's default
is ``auto``, which picks one of them from the image size (:func:`msssim_settings_for`); ``ms_ssim``
called without settings uses ``small``.

``small``
    3 scales, odd 7 px gaussian window (sigma 1.5), the first three of Wang et al.'s five scale
    weights renormalized to sum 1. It is the finest multi-scale setting in which every scale still
    holds a full window on 28 px images (28 -> 14 -> 7; the smallest valid side is 25 px), so no
    window has to be cut down and the score means the same thing at 28, 32 and 64 px. An odd
    window keeps the filter centred; a 7 px window spans +-2 sigma of the gaussian.
``paper``
    The behaviour of the older ``pytorch-msssim`` release the reference code called as
    ``msssim(x, y, window_size=6, normalize='relu')``: five scales with the standard weights,
    sigma 1.5, an even 6 px window whose centre sits at index 3 (offsets -3..2), shrunk at each
    scale to ``min(6, H, W)`` (32 px: 6, 6, 6, 4, 2; 28 px: 6, 6, 6, 3, 1), 2x2 average pooling
    that drops an odd last row/column, scale maps averaged over channels before the scales are
    combined, relu on every scale term, and that release's product, which multiplies the
    coarsest-scale SSIM into each of the four contrast factors (its effective exponent is
    4 x 0.1333). The reference attacked one image per call, so its batch means are per-image
    scores, as here. The coarsest scales of a 28-32 px image are 1-2 px, where SSIM is barely
    defined; use it only to compare with the paper's numbers.
``pytorch_msssim``
    The settings of ``pytorch_msssim.ms_ssim`` (window 11, sigma 1.5, five scales, its weights,
    K = (0.01, 0.03), odd sides padded before pooling, per-channel scores averaged last), with
    ``data_range=1`` because aerobust images live in [0, 1] (that library defaults to 255).
    Valid from 161 px on, where it equals the library to float precision.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F

from .errors import AerobustError, ShapeError
from .registry import register_metric
from .results import MetricInputs, ResultMetric

# Wang, Simoncelli & Bovik (2003), finest scale first.
WANG_SCALE_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

SMALL_IMAGE_POLICIES = ("error", "shrink")
DOWNSAMPLING_MODES = ("pad-odd", "floor")
CHANNEL_POOLING_MODES = ("scores", "maps")


def _renormalized(weights) -> tuple[float, ...]:
    total = sum(weights)
    return tuple(w / total for w in weights)


@dataclass(frozen=True)
class MSSSIMSettings:
    """Everything that decides an MS-SSIM score; ``as_dict()`` goes into every manifest and report.

    ``small_images``: ``"error"`` raises when a scale is smaller than the window (the message names
    the minimum size); ``"shrink"`` cuts the window down to ``min(window_size, H, W)`` at that scale.
    ``downsampling``: ``"pad-odd"`` pads an odd side before 2x2 average pooling (zeros count in the
    average, like pytorch_msssim); ``"floor"`` drops the odd last row/column.
    ``channel_pooling``: ``"scores"`` combines the scales per channel and averages the channel
    scores; ``"maps"`` averages each scale's terms over channels first.
    ``legacy_product``: reproduce the older release's product, in which the coarsest-scale SSIM
    multiplies each of the ``scales - 1`` contrast factors.
    """

    scales: int = 3
    window_size: int = 7
    sigma: float = 1.5
    weights: tuple[float, ...] | None = None
    k1: float = 0.01
    k2: float = 0.03
    data_range: float = 1.0
    small_images: str = "error"
    downsampling: str = "pad-odd"
    channel_pooling: str = "scores"
    legacy_product: bool = False
    preset: str | None = None

    def __post_init__(self):
        if not isinstance(self.scales, int) or self.scales < 1:
            raise AerobustError(f"MS-SSIM scales must be a positive integer; got {self.scales!r}")
        if not isinstance(self.window_size, int) or self.window_size < 1:
            raise AerobustError(f"MS-SSIM window_size must be a positive integer; got {self.window_size!r}")
        for name in ("sigma", "data_range", "k1", "k2"):
            if not getattr(self, name) > 0:
                raise AerobustError(f"MS-SSIM {name} must be > 0; got {getattr(self, name)!r}")
        weights = self.weights
        if weights is None:
            if self.scales > len(WANG_SCALE_WEIGHTS):
                raise AerobustError(f"give MS-SSIM weights explicitly for more than "
                                    f"{len(WANG_SCALE_WEIGHTS)} scales")
            weights = _renormalized(WANG_SCALE_WEIGHTS[:self.scales])
        weights = tuple(float(w) for w in weights)
        if len(weights) != self.scales or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise AerobustError(f"MS-SSIM needs {self.scales} non-negative weights (one per scale); "
                                f"got {weights}")
        object.__setattr__(self, "weights", weights)
        for name, allowed in (("small_images", SMALL_IMAGE_POLICIES), ("downsampling", DOWNSAMPLING_MODES),
                              ("channel_pooling", CHANNEL_POOLING_MODES)):
            if getattr(self, name) not in allowed:
                raise AerobustError(f"MS-SSIM {name} must be one of {', '.join(allowed)}; "
                                    f"got {getattr(self, name)!r}")
        if self.legacy_product and self.scales < 2:
            # the legacy product over the contrast factors is empty for one scale: it would score 1
            raise AerobustError("MS-SSIM legacy_product needs at least 2 scales")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MSSSIMSettings":
        try:
            fields = MSSSIM_PRESETS[name]
        except KeyError:
            raise AerobustError(f"unknown MS-SSIM preset '{name}'; known: {', '.join(MSSSIM_PRESETS)}") from None
        return cls(**{**fields, "preset": name, **overrides})

    @classmethod
    def from_dict(cls, values: Mapping) -> "MSSSIMSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AerobustError(f"unknown MS-SSIM settings {unknown}; known: {sorted(known)}")
        values = dict(values)
        if values.get("weights") is not None:
            values["weights"] = tuple(values["weights"])
        return cls(**values)

    def as_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["weights"] = list(self.weights)
        values["min_image_size"] = self.min_image_size()
        values["name"] = "ms-ssim"
        return values

    def scale_sides(self, side: int) -> list[int]:
        """The side length of an image of ``side`` px at every scale, finest first."""
        sides = [side]
        for _ in range(self.scales - 1):
            side = (side + 1) // 2 if self.downsampling == "pad-odd" else side // 2
            sides.append(side)
        return sides

    def min_image_size(self) -> int:
        """The smallest square side these settings can score."""
        needed = 1 if self.small_images == "shrink" else self.window_size
        side = 1
        while min(self.scale_sides(side)) < needed:
            side += 1
        return side


MSSSIM_PRESETS: dict[str, dict] = {
    "small": dict(scales=3, window_size=7, sigma=1.5),
    "paper": dict(scales=5, window_size=6, sigma=1.5, weights=WANG_SCALE_WEIGHTS, small_images="shrink",
                  downsampling="floor", channel_pooling="maps", legacy_product=True),
    "pytorch_msssim": dict(scales=5, window_size=11, sigma=1.5, weights=WANG_SCALE_WEIGHTS),
}
# What ms_ssim() uses without settings; the audit's default is AUTO_MSSSIM.
DEFAULT_MSSSIM_PRESET = "small"


def resolve_msssim_settings(settings: MSSSIMSettings | str | Mapping | None = None) -> MSSSIMSettings:
    """A settings object from an object, a preset name, a dict (e.g. from a manifest) or None (default)."""
    if settings is None:
        return MSSSIMSettings.from_preset(DEFAULT_MSSSIM_PRESET)
    if isinstance(settings, MSSSIMSettings):
        return settings
    if isinstance(settings, str):
        return MSSSIMSettings.from_preset(settings)
    if isinstance(settings, Mapping):
        derived = {"min_image_size", "name"}
        return MSSSIMSettings.from_dict({k: v for k, v in settings.items() if k not in derived})
    raise AerobustError(f"MS-SSIM settings must be MSSSIMSettings, a preset name or a dict; got {type(settings).__name__}")


AUTO_MSSSIM = "auto"
# One line per choice of the audit's --msssim, for `aerobust list metrics`.
MSSSIM_PRESET_SUMMARIES = {
    AUTO_MSSSIM: "the audit's default: pytorch_msssim from 161 px, paper for 16-64 px greyscale, else small "
                 "(fewer scales below 25 px)",
    "small": "3 scales, 7 px window: every scale holds a full window from 25 px on (ms_ssim's default)",
    "paper": "the reference code's older pytorch-msssim call (5 scales, 6 px window shrunk per scale)",
    "pytorch_msssim": "pytorch_msssim.ms_ssim's settings with data_range=1 (5 scales, 11 px window; >= 161 px)",
}
PYTORCH_MSSSIM_MIN_SIDE = 161  # pytorch_msssim asserts side > (11 - 1) * 2 ** 4


def msssim_settings_for(choice: MSSSIMSettings | str | Mapping | None, image_shape) -> MSSSIMSettings:
    """``"auto"`` picks settings for images of ``image_shape`` (C, H, W); anything else resolves as usual.

    The rule: photographs (shortest side >= 161 px) get ``pytorch_msssim``, the standard five-scale
    setting; greyscale 16-64 px images (the reference protocol's digits) get ``paper``, so scores
    compare with the paper's; other images of >= 25 px get ``small``; smaller ones get ``small`` with
    as many scales as still hold its 7 px window (one scale, plain SSIM, with a window cut to the
    image below 7 px). The chosen preset and the shape are recorded in ``preset``.
    """
    if choice != AUTO_MSSSIM:
        return resolve_msssim_settings(choice)
    channels, height, width = (int(s) for s in image_shape)
    side = min(height, width)
    overrides: dict = {}
    if side >= PYTORCH_MSSSIM_MIN_SIDE:
        name = "pytorch_msssim"
    elif channels == 1 and 16 <= side <= 64:
        name = "paper"
    else:
        name = "small"
        window = MSSSIM_PRESETS["small"]["window_size"]
        scales = MSSSIM_PRESETS["small"]["scales"]
        while scales > 1 and min(MSSSIMSettings(scales=scales).scale_sides(side)) < window:
            scales -= 1
        if scales != MSSSIM_PRESETS["small"]["scales"]:
            overrides["scales"] = scales
        if side < window:
            overrides["window_size"] = side if side % 2 else side - 1
    settings = MSSSIMSettings.from_preset(name, **overrides)
    changed = "".join(f", {k} {v}" for k, v in overrides.items())
    return dataclasses.replace(settings, preset=f"auto: {name}{changed} for {channels}x{height}x{width} images")


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str):
    if a.shape != b.shape:
        raise ShapeError(f"{what} needs two batches of the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() != 4:
        raise ShapeError(f"{what} needs image batches shaped (N, C, H, W); got {tuple(a.shape)}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise ShapeError(f"{what} needs floating-point images; got {a.dtype} and {b.dtype}")


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    # centre at index size // 2 for odd and even sizes alike (an even window is off by half a pixel)
    offsets = torch.arange(size, dtype=like.dtype, device=like.device) - size // 2
    window = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    return window / window.sum()


def _local_means(stack: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable gaussian average over each channel of ``stack``, valid positions only."""
    channels, size = stack.shape[1], window.numel()
    horizontal = window.view(1, 1, 1, size).expand(channels, 1, 1, size)
    vertical = window.view(1, 1, size, 1).expand(channels, 1, size, 1)
    return F.conv2d(F.conv2d(stack, horizontal, groups=channels), vertical, groups=channels)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, settings: MSSSIMSettings):
    """Mean SSIM and mean contrast-structure term per image and channel at one scale: (N, C) each."""
    size = min(settings.window_size, x.shape[-2], x.shape[-1])
    window = _gaussian_window(size, settings.sigma, x)
    channels = x.shape[1]
    means = _local_means(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = means.split(channels, dim=1)
    var_x = mean_xx - mu_x ** 2
    var_y = mean_yy - mu_y ** 2
    cov_xy = mean_xy - mu_x * mu_y
    c1 = (settings.k1 * settings.data_range) ** 2
    c2 = (settings.k2 * settings.data_range) ** 2
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return (luminance * contrast_structure).mean(dim=(-2, -1)), contrast_structure.mean(dim=(-2, -1))


def _downsample(images: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "pad-odd":
        return F.avg_pool2d(images, kernel_size=2, padding=[s % 2 for s in images.shape[-2:]])
    return F.avg_pool2d(images, kernel_size=2)


def ms_ssim(x: torch.Tensor, y: torch.Tensor,
            settings: MSSSIMSettings | str | Mapping | None = None) -> torch.Tensor:
    """Multi-scale SSIM of each image pair: ``(N, C, H, W)`` twice -> ``(N,)`` in [0, 1].

    ``settings`` is an :class:`MSSSIMSettings`, a preset name (``small``, ``paper``,
    ``pytorch_msssim``) or None for ``small`` (``DEFAULT_MSSSIM_PRESET``; the audit resolves its
    ``auto`` with :func:`msssim_settings_for` first). Identical images score exactly 1; NaN inputs give
    NaN scores. Raises :class:`AerobustError` when the images are smaller than the settings allow.
    """
    settings = resolve_msssim_settings(settings)
    _check_pair(x, y, "MS-SSIM")
    side = min(x.shape[-2:])
    needed = settings.min_image_size()
    if side < needed:
        raise AerobustError(
            f"MS-SSIM with {settings.scales} scales and a {settings.window_size} px window needs images of at "
            f"least {needed}x{needed} px; got {x.shape[-2]}x{x.shape[-1]}. Use fewer scales, a smaller window, "
            f"or small_images='shrink'")
    contrast_terms = []
    for scale in range(settings.scales):
        ssim, contrast_structure = _ssim_terms(x, y, settings)
        if settings.channel_pooling == "maps":
            ssim, contrast_structure = ssim.mean(1, keepdim=True), contrast_structure.mean(1, keepdim=True)
        if scale < settings.scales - 1:
            contrast_terms.append(torch.relu(contrast_structure))
            x, y = _downsample(x, settings.downsampling), _downsample(y, settings.downsampling)
    weights = torch.tensor(settings.weights, dtype=x.dtype, device=x.device)
    coarsest_exponent = weights[-1] * (settings.scales - 1 if settings.legacy_product else 1)
    score = torch.relu(ssim) ** coarsest_exponent
    for term, weight in zip(contrast_terms, weights[:-1]):
        score = score * term ** weight
    return score.mean(dim=1)


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between each pair of samples (images or codes): ``(N, ...)`` twice -> ``(N,)``."""
    if a.shape != b.shape or a.dim() < 1:
        raise ShapeError(f"l2_distance needs two batches of the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a - b).reshape(len(a), -1).norm(dim=1)


def mean_squared_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per pair of samples: ``(N, ...)`` twice -> ``(N,)``."""
    if a.shape != b.shape or a.dim() < 1:
        raise ShapeError(f"mean_squared_error needs two batches of the same shape; got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return (a - b).reshape(len(a), -1).pow(2).mean(dim=1)


def code_separation(codes: torch.Tensor) -> torch.Tensor:
    """Per sample, the median distance from its code to the codes of the other samples ``(N, ...) -> (N,)``.

    The yardstick for attacks on the code: an attack that moves a code by this much has moved it as
    far as the code of a typical other image lies. NaN for a single sample (no other image).
    """
    flat = codes.reshape(len(codes), -1).double()
    if len(flat) < 2:
        return torch.full((len(flat),), float("nan"), dtype=codes.dtype, device=codes.device)
    distances = torch.cdist(flat, flat)
    others = ~torch.eye(len(flat), dtype=torch.bool, device=flat.device)
    return distances[others].view(len(flat), len(flat) - 1).median(dim=1).values.to(codes.dtype)


def spread_ratio(reconstructions: torch.Tensor, inputs: torch.Tensor) -> float:
    """How much the reconstructions vary across images relative to the inputs.

    Summed squared deviation from the batch mean of the reconstructions over that of the inputs:
    1 for a perfect autoencoder, 0 for one whose output does not depend on its input; NaN when the
    inputs do not vary.
    """
    def spread(batch):
        flat = batch.detach().reshape(len(batch), -1).double()
        return float((flat - flat.mean(dim=0)).pow(2).sum())

    denominator = spread(inputs)
    return spread(reconstructions) / denominator if denominator > 0 else float("nan")


register_metric("ms-ssim", ms_ssim)
register_metric("l2", l2_distance)
register_metric("mse", mean_squared_error)


# -- the results columns (aerobust/results.py): one registered ResultMetric each, in column order ----
def _latent_shift(rows: MetricInputs) -> torch.Tensor:
    return (rows.code_adv - rows.code).flatten(1).norm(dim=1)


def _targeted(compute):
    """A target metric: empty for blocks of untargeted attacks."""
    return lambda rows: None if rows.targets is None else compute(rows)


def _classified(compute):
    """A latent-classifier metric: empty without a classifier head and labels."""
    return lambda rows: None if rows.head is None or rows.labels is None else compute(rows)


def _accuracy(head, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1/0 per row; a prediction from a NaN code is not a prediction: NaN (missing), not 0 (wrong)."""
    correct = (head(codes).argmax(1) == labels).float()
    return torch.where(torch.isfinite(codes.flatten(1)).all(dim=1), correct, torch.tensor(float("nan"),
                                                                                             device=codes.device))


for _metric in (
    ResultMetric("attack_loss", "attack loss", "attack loss", compute=lambda rows: rows.attack_loss),
    ResultMetric("l2_delta", "‖x_a − x‖", r"$\|x_a - x\|_2$", compute=lambda rows: l2_distance(rows.x_adv, rows.x)),
    ResultMetric("msssim_input_adv", "MS-SSIM(x_r, x_a), x_r = x", r"MS-SSIM($x_r, x_a$), $x_r = x$",
                 compute=lambda rows: ms_ssim(rows.x, rows.x_adv, rows.msssim)),
    ResultMetric("msssim_target_advrecon", "MS-SSIM(x_r, x̃_a), x_r = x_t",
                 r"MS-SSIM($x_r, \tilde{x}_a$), $x_r = x_t$", direction="lower",
                 compute=_targeted(lambda rows: ms_ssim(rows.targets, rows.recon_adv, rows.msssim))),
    ResultMetric("msssim_input_advrecon", "MS-SSIM(x, x̃_a)", r"MS-SSIM($x, \tilde{x}_a$)", direction="higher",
                 compute=lambda rows: ms_ssim(rows.x, rows.recon_adv, rows.msssim)),
    ResultMetric("msssim_recon_advrecon", "MS-SSIM(x̃_r, x̃_a)", r"MS-SSIM($\tilde{x}_r, \tilde{x}_a$)", direction="higher",
                 compute=lambda rows: ms_ssim(rows.recon, rows.recon_adv, rows.msssim)),
    ResultMetric("l2_recon_advrecon", "‖x̃_a − x̃_r‖", r"$\|\tilde{x}_a - \tilde{x}_r\|_2$", direction="lower",
                 compute=lambda rows: l2_distance(rows.recon_adv, rows.recon)),
    ResultMetric("l2_target_advrecon", "‖x̃_a − x_t‖", r"$\|\tilde{x}_a - x_t\|_2$", direction="higher",
                 compute=_targeted(lambda rows: l2_distance(rows.recon_adv, rows.targets))),
    # Equal to attack_loss for the latent attack (eq. 12 is this distance), but not for the KL
    # attacks, whose attack loss is a divergence: it makes every targeted attack comparable in code space.
    ResultMetric("latent_target_distance", "‖g(x_a) − g(x_t)‖", r"$\|g(x_a) - g(x_t)\|_2$", direction="higher",
                 compute=_targeted(lambda rows: (rows.code_adv - rows.model.encode(rows.targets)).flatten(1).norm(dim=1))),
    ResultMetric("classifier_correct", "accuracy under attack (%)", r"accuracy under attack (\%)",
                 percent=True, direction="higher", compute=_classified(lambda rows: _accuracy(rows.head, rows.code_adv, rows.labels))),
    ResultMetric("clean_classifier_correct", "clean accuracy (%)", r"clean accuracy (\%)",
                 percent=True, clean=True, direction="higher",
                 compute=_classified(lambda rows: _accuracy(rows.head, rows.code, rows.labels))),
    ResultMetric("msssim_input_recon", "clean MS-SSIM(x, x̃)", r"clean MS-SSIM($x, \tilde{x}$)",
                 clean=True, per_image=True, direction="higher", compute=lambda rows: ms_ssim(rows.x, rows.recon, rows.msssim)),
    ResultMetric("mse_input_recon", "clean MSE(x, x̃)", r"clean MSE($x, \tilde{x}$)",
                 clean=True, per_image=True, direction="lower", compute=lambda rows: mean_squared_error(rows.x, rows.recon)),
    ResultMetric("latent_shift", "‖g(x_a) − g(x)‖", r"$\|g(x_a) - g(x)\|_2$", compute=_latent_shift, direction="lower"),
    # 0/0 (a constant encoder) stays NaN: the code does not tell images apart at all.
    ResultMetric("relative_code_shift", "‖g(x_a) − g(x)‖ / code separation",
                 r"$\|g(x_a) - g(x)\|_2$ / code separation", direction="lower",
                 compute=lambda rows: _latent_shift(rows) / rows.code_separation),
):
    register_metric(_metric.column, _metric)
