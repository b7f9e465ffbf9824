"""MS-SSIM: agreement with pytorch_msssim where it is valid, behaviour on 28-64 px images, gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_msssim
import scipy.signal
import torch
import torch.nn.functional as F
from hypothesis import given, settings as hypothesis_settings, strategies as st

from aerobust.errors import AerobustError, ShapeError
from aerobust.metrics import (MSSSIM_PRESETS, MSSSIMSettings, l2_distance, ms_ssim,
                              resolve_msssim_settings)
from aerobust.registry import METRICS


def _smooth_noise(generator, n, channels, side):
    """Random fields with image-like spatial correlation: upsampled coarse noise in [0, 1]."""
    coarse = torch.rand(n, channels, side // 8, side // 8, generator=generator)
    return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)


def _perturbed(images, generator, scale):
    return (images + scale * torch.randn(images.shape, generator=generator, dtype=images.dtype)).clamp(0, 1)


def _at(images, side):
    """Real MNIST at 28 px (the original digits, padding cropped) or at the padded 32 px."""
    return images[..., 2:30, 2:30] if side == 28 else images


def _large_pairs(mnist_test, side):
    """Reference images at ``side`` px (upsampled real MNIST, smooth noise) and distorted partners."""
    generator = torch.Generator().manual_seed(side)
    digits = F.interpolate(mnist_test.images[:4], size=(side, side), mode="bilinear", align_corners=False)
    fields = _smooth_noise(generator, 4, 1, side)
    clean = torch.cat([digits, fields])
    distorted = torch.cat([
        _perturbed(clean[:3], generator, 0.05),
        _perturbed(clean[3:5], generator, 0.3),
        F.avg_pool2d(clean[5:], 5, stride=1, padding=2),  # blur: structure loss without noise
    ])
    return clean, distorted


@pytest.mark.parametrize("side", [161, 192])
def test_pytorch_msssim_preset_matches_the_library(mnist_test, side):
    clean, distorted = _large_pairs(mnist_test, side)
    ours = ms_ssim(clean, distorted, "pytorch_msssim")
    theirs = pytorch_msssim.ms_ssim(clean, distorted, data_range=1.0, size_average=False)
    assert ours.shape == (len(clean),)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert ours.std() > 0.05  # the pairs span a real range of scores, not one easy value


def test_matching_custom_settings_match_the_library_in_colour(mnist_test):
    generator = torch.Generator().manual_seed(5)
    clean = torch.cat([_smooth_noise(generator, 3, 3, 176),
                       F.interpolate(mnist_test.images[:3], size=(176, 176), mode="bilinear").repeat(1, 3, 1, 1)])
    distorted = _perturbed(clean, generator, 0.1)
    settings = MSSSIMSettings(scales=4, window_size=9, sigma=2.0, weights=(0.1, 0.2, 0.3, 0.4),
                              k1=0.02, k2=0.05, data_range=1.0)
    ours = ms_ssim(clean, distorted, settings)
    theirs = pytorch_msssim.ms_ssim(clean, distorted, data_range=1.0, size_average=False, win_size=9,
                                    win_sigma=2.0, weights=[0.1, 0.2, 0.3, 0.4], K=(0.02, 0.05))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def _scipy_ssim_terms(x: np.ndarray, y: np.ndarray, window: int, sigma: float, k1: float, k2: float,
                     data_range: float):
    """Single-scale mean SSIM and mean contrast-structure of two 2-D images, gaussian centred at window // 2."""
    offsets = np.arange(window) - window // 2
    g = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = np.outer(g, g) / g.sum() ** 2

    def local(a):
        return scipy.signal.correlate2d(a, kernel, mode="valid")

    mx, my = local(x), local(y)
    vx, vy, cxy = local(x * x) - mx ** 2, local(y * y) - my ** 2, local(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    cs = (2 * cxy + c2) / (vx + vy + c2)
    return float(np.mean((2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1) * cs)), float(np.mean(cs))


def _scipy_ssim(x, y, window, sigma, k1, k2, data_range):
    return _scipy_ssim_terms(x, y, window, sigma, k1, k2, data_range)[0]


def _legacy_paper_msssim(x: np.ndarray, y: np.ndarray) -> float:
    """The older release's msssim(x, y, window_size=6, normalize='relu') for one gray image, written out."""
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    contrast, ssim = [], []
    for _ in weights:
        size = min(6, *x.shape)
        s, c = _scipy_ssim_terms(x, y, size, 1.5, 0.01, 0.03, 1.0)
        ssim.append(max(s, 0.0))
        contrast.append(max(c, 0.0))
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        y = y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    # that release multiplies the coarsest SSIM term into every one of the first four factors
    return float(np.prod([contrast[i] ** weights[i] * ssim[-1] ** weights[-1] for i in range(4)]))


@pytest.mark.parametrize("side", [28, 32])
def test_paper_preset_equals_the_legacy_formula_written_out(mnist_test, side):
    x = _at(mnist_test.images[:4], side).double()
    y = _perturbed(x, torch.Generator().manual_seed(2), 0.15)
    ours = ms_ssim(x, y, "paper")
    expected = [_legacy_paper_msssim(a[0].numpy(), b[0].numpy()) for a, b in zip(x, y)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("window", [6, 7])
def test_single_scale_equals_an_independent_scipy_ssim(mnist_test, window):
    x = mnist_test.images[:3].double()
    y = _perturbed(x, torch.Generator().manual_seed(1), 0.1)
    settings = MSSSIMSettings(scales=1, window_size=window, sigma=1.2, k1=0.02, k2=0.04, data_range=2.0)
    ours = ms_ssim(x, y, settings)
    expected = [max(0.0, _scipy_ssim(a[0].numpy(), b[0].numpy(), window, 1.2, 0.02, 0.04, 2.0))
                for a, b in zip(x, y)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("preset", sorted(MSSSIM_PRESETS))
@pytest.mark.parametrize("side,channels", [(28, 1), (32, 1), (32, 3), (64, 3)])
def test_identical_images_score_one(mnist_test, preset, side, channels):
    settings = MSSSIMSettings.from_preset(preset)
    if side < settings.min_image_size():
        pytest.skip(f"{preset} is not valid at {side} px")
    images = _at(mnist_test.images[:4], side).repeat(1, channels, 1, 1)
    if side == 64:
        images = F.interpolate(images, size=(64, 64), mode="bilinear")
    torch.testing.assert_close(ms_ssim(images, images.clone(), settings), torch.ones(4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset", ["small", "paper"])
@pytest.mark.parametrize("side", [28, 32])
def test_score_falls_monotonically_with_noise(mnist_test, preset, side):
    images = _at(mnist_test.images[:16], side)
    direction = torch.randn(images.shape, generator=torch.Generator().manual_seed(side))
    levels = [0.02, 0.05, 0.1, 0.2, 0.4, 0.8]
    scores = torch.stack([ms_ssim(images, (images + level * direction).clamp(0, 1), preset) for level in levels])
    assert (scores[1:] < scores[:-1]).all(), scores
    assert scores[0].min() > 0.9 and scores[-1].max() < 0.7, scores  # the range is used, not saturated


@pytest.mark.parametrize("preset", ["small", "paper"])
@pytest.mark.parametrize("side", [28, 32])
def test_gradients_flow(mnist_test, preset, side):
    reference = _at(mnist_test.images[:4], side)
    adversarial = _perturbed(reference, torch.Generator().manual_seed(3), 0.1).requires_grad_(True)
    ms_ssim(reference, adversarial, preset).sum().backward()
    gradient = adversarial.grad
    assert torch.isfinite(gradient).all()
    assert (gradient.flatten(1).norm(dim=1) > 0).all()


def test_scores_are_per_image_not_per_batch(mnist_test):
    reference = mnist_test.images[:6]
    distorted = _perturbed(reference, torch.Generator().manual_seed(4), 0.2)
    for preset in ("small", "paper"):
        batched = ms_ssim(reference, distorted, preset)
        alone = torch.cat([ms_ssim(reference[i:i + 1], distorted[i:i + 1], preset) for i in range(6)])
        torch.testing.assert_close(batched, alone, atol=1e-6, rtol=0)


def test_too_small_images_name_the_minimum_size():
    images = torch.rand(2, 1, 24, 24)
    with pytest.raises(AerobustError, match="25x25"):
        ms_ssim(images, images)
    with pytest.raises(AerobustError, match="161x161"):
        ms_ssim(torch.rand(1, 1, 160, 160), torch.rand(1, 1, 160, 160), "pytorch_msssim")
    assert MSSSIMSettings.from_preset("paper").min_image_size() == 16


def test_nan_input_is_not_scored_as_similar(mnist_test):
    images = mnist_test.images[:2].clone()
    broken = images.clone()
    broken[0, 0, 10, 10] = float("nan")
    scores = ms_ssim(images, broken)
    assert math.isnan(scores[0]) and not math.isnan(scores[1])


def test_bad_inputs_and_settings_are_user_errors():
    with pytest.raises(ShapeError):
        ms_ssim(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 31))
    with pytest.raises(ShapeError):
        ms_ssim(torch.rand(1, 32, 32), torch.rand(1, 32, 32))
    with pytest.raises(AerobustError):
        MSSSIMSettings(scales=3, weights=(0.5, 0.5))
    with pytest.raises(AerobustError):
        MSSSIMSettings(scales=1, legacy_product=True)
    with pytest.raises(AerobustError, match="known"):
        MSSSIMSettings.from_preset("nope")


def test_settings_round_trip_through_their_dict():
    for preset in MSSSIM_PRESETS:
        settings = MSSSIMSettings.from_preset(preset)
        record = settings.as_dict()
        assert record["min_image_size"] == settings.min_image_size()
        assert resolve_msssim_settings(record) == settings


def test_registered_metrics():
    x, y = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(METRICS.get("ms-ssim")(x, y), ms_ssim(x, y))
    torch.testing.assert_close(METRICS.get("l2")(x, y), l2_distance(x, y))


def test_l2_distance_matches_numpy():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(5, 3, 8, 8, generator=generator), torch.rand(5, 3, 8, 8, generator=generator)
    expected = np.sqrt(((a.numpy() - b.numpy()) ** 2).reshape(5, -1).sum(1))
    np.testing.assert_allclose(l2_distance(a, b).numpy(), expected, rtol=1e-6)
    codes = torch.rand(4, 10, generator=generator)
    np.testing.assert_allclose(l2_distance(codes, torch.zeros(4, 10)).numpy(),
                               np.linalg.norm(codes.numpy(), axis=1), rtol=1e-6)


@hypothesis_settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.0, 1.0), preset=st.sampled_from(["small", "paper"]))
def test_symmetric_and_within_unit_interval(seed, scale, preset):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 32, 32, generator=generator)
    y = _perturbed(x, generator, scale)
    forward, backward = ms_ssim(x, y, preset), ms_ssim(y, x, preset)
    torch.testing.assert_close(forward, backward, atol=1e-6, rtol=0)
    # float32 local variances of near-identical images carry ~1e-6 rounding, a score may pass 1 by that
    assert ((forward >= 0) & (forward <= 1 + 2e-5)).all()


def _devices():
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


@pytest.mark.parametrize("device", _devices())
def test_runs_on_the_device_of_its_inputs(mnist_test, device):
    x = mnist_test.images[:4]
    y = _perturbed(x, torch.Generator().manual_seed(6), 0.1)
    on_device = ms_ssim(x.to(device), y.to(device), "paper")
    assert on_device.device.type == device
    torch.testing.assert_close(on_device.cpu(), ms_ssim(x, y, "paper"), atol=1e-5, rtol=0)
