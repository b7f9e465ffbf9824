"""AutoAttack-style sanity checks on a finished sweep; each problem becomes a flag dict, never a print.

Flags: ``nan-gradient``, ``zero-gradient`` (gradient masking or a flat objective), ``non-monotone-lambda``
(the worst case over nested balls must not weaken as lambda grows), ``weaker-than-noise`` (random
noise of the full radius beats the attack), ``unbounded-target-missed`` (with a radius covering the
whole box the latent attack should reach its target code).

The audit adds two flags about the model rather than the optimizer: ``degenerate-model`` (the
reconstructions do not depend on the input, so no attack can change them and every robustness score
is meaningless; thresholds below) and ``non-finite`` (NaN/inf codes, reconstructions or losses, with
counts per block). The audit report computes ``non-monotone-lambda`` across its blocks, one per lambda.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ..runtime import tensor_digest
from ..threat import Threat, seeded_noise
from .problem import sample_seeds

# Relative slack before a comparison between two attack losses counts as a real difference.
MONOTONE_RTOL = 1e-2
NOISE_RTOL = 1e-3
# The unbounded latent attack must end closer to the target code than this fraction of x's distance.
UNBOUNDED_REACH = 0.1
UNBOUNDED_SAMPLES = 4
# degenerate-model, either criterion:
# - the reconstructions of the audited images vary less than 1 % as much as the images themselves
#   (summed squared deviation from their mean, metrics.spread_ratio): the output ignores the input;
DEGENERATE_SPREAD_RATIO = 0.01
# - the median clean MS-SSIM(x, x~) is below 0.1: the reconstructions are unrelated to the inputs
#   (an untrained model scores about 0.03; a trained MNIST MLP scores above 0.8 with the paper preset).
DEGENERATE_MSSSIM = 0.1

FLAG_ORDER = ("nan-gradient", "zero-gradient", "non-monotone-lambda", "weaker-than-noise", "unbounded-target-missed")
# Flags that count samples: the flags of a sweep split into image ranges add up (aerobust.distributed).
PER_SAMPLE_FLAGS = {
    "nan-gradient": "{count} of {of} attacked samples had NaN/inf input gradients (set to 0); the model or "
                    "objective is numerically unstable there",
    "zero-gradient": "{count} of {of} attacked samples had an all-zero input gradient at the start; a flat or "
                     "masked objective makes the attack loss overstate robustness",
    "non-monotone-lambda": "{count} of {of} (trial, image, neighbouring lambdas) comparisons got a weaker attack "
                           f"at the larger lambda (by > {MONOTONE_RTOL:.0%}); the optimizer does not find the worst "
                           "case, use more steps or restarts",
    "weaker-than-noise": "random noise of norm lambda beat the attack on {count} of {of} samples; the optimizer "
                         "is failing (step size, gradient masking)",
}


def per_sample_flag(flag: str, count: int, of: int) -> dict:
    return {"flag": flag, "count": count, "of": of, "message": PER_SAMPLE_FLAGS[flag].format(count=count, of=of)}


def _strength(values: torch.Tensor, maximize: bool) -> torch.Tensor:
    return values if maximize else -values


def sanity_flags(attack, model, *, bind, lambdas, shape, adv, loss, clean, seed, image_ids,
                 zero_gradient, nan_gradient) -> list[dict]:
    n_lambdas, trials, restarts, n_images = shape
    maximize = attack.objective.maximize
    attacked = torch.tensor(lambdas)[:, None, None, None].expand(shape) > 0
    flags = []

    n_attacked = int(attacked.sum())
    nan_rows = int((nan_gradient & attacked).sum())
    if nan_rows:
        flags.append(per_sample_flag("nan-gradient", nan_rows, n_attacked))
    zero_rows = int((zero_gradient & attacked).sum())
    if zero_rows:
        flags.append(per_sample_flag("zero-gradient", zero_rows, n_attacked))

    flags.extend(non_monotone_flags(lambdas, loss, maximize))

    noise_count, noise_total = 0, 0
    for l, lam in enumerate(lambdas):
        if lam <= 0:
            continue
        rows = torch.tensor([((l * trials + t) * restarts) * n_images + n
                             for t in range(trials) for n in range(n_images)])
        problem = bind(rows)
        trial_of = torch.arange(trials).repeat_interleave(n_images)
        ids = image_ids.repeat(trials)
        normal, _ = seeded_noise(sample_seeds(seed, "noise", trial_of.tolist(), ids.tolist()),
                                 problem.x.shape[1:], problem.x.device)
        direction = normal / normal.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        with torch.no_grad():
            noise_values = problem.values(problem.threat.apply(problem.x, direction * lam)).view(trials, n_images)
        attack_strength = _strength(loss[l], maximize)
        noise_strength = _strength(noise_values, maximize)
        beaten = noise_strength > attack_strength + NOISE_RTOL * attack_strength.abs() + 1e-6
        noise_count += int(beaten.sum())
        noise_total += beaten.numel()
    if noise_count:
        flags.append(per_sample_flag("weaker-than-noise", noise_count, noise_total))

    if getattr(attack.objective, "target_reachable", False):
        flags.extend(_unbounded_check(attack, model, bind, shape, clean))
    return flags


def non_monotone_flags(lambdas, loss: torch.Tensor, maximize: bool) -> list[dict]:
    """``non-monotone-lambda`` when some sample's attack is weaker at a larger lambda than at a smaller one.

    ``loss`` holds one value per lambda along its first dimension (any shape after it: trials,
    images); pairs of neighbouring lambdas are compared per sample. NaN values never count as weaker.
    """
    if len(lambdas) < 2:
        return []
    order = sorted(range(len(lambdas)), key=lambda i: lambdas[i])
    strength = _strength(loss, maximize)[order]
    lower, higher = strength[:-1], strength[1:]
    distinct = torch.tensor([lambdas[b] > lambdas[a] for a, b in zip(order[:-1], order[1:])], device=loss.device)
    distinct = distinct.view(-1, *([1] * (loss.dim() - 1)))
    weaker = (higher < lower - MONOTONE_RTOL * lower.abs() - 1e-6) & distinct
    count = int(weaker.sum())
    if not count:
        return []
    return [per_sample_flag("non-monotone-lambda", count, int(weaker.numel()))]


def degenerate_model_flag(inputs: torch.Tensor, reconstructions: torch.Tensor,
                          clean_msssim: torch.Tensor) -> dict | None:
    """``degenerate-model`` when the reconstructions do not depend on the input (thresholds above)."""
    from ..metrics import spread_ratio

    ratio = spread_ratio(reconstructions, inputs)
    median_msssim = float(clean_msssim.nanmedian())
    reasons = []
    if ratio < DEGENERATE_SPREAD_RATIO:
        reasons.append(f"its reconstructions vary {ratio:.3g} times as much as the images "
                       f"(threshold {DEGENERATE_SPREAD_RATIO})")
    if not median_msssim >= DEGENERATE_MSSSIM:  # a NaN median counts as degenerate
        reasons.append(f"the median clean MS-SSIM(x, x~) is {median_msssim:.3g} (threshold {DEGENERATE_MSSSIM})")
    if not reasons:
        return None
    return {"flag": "degenerate-model", "count": len(inputs), "of": len(inputs), "spread_ratio": ratio,
            "median_msssim_input_recon": median_msssim,
            "message": f"the reconstructions do not depend on the input: {' and '.join(reasons)}; no attack can "
                       "change such reconstructions, so this model's robustness scores mean nothing"}


def non_finite_flag(parts: dict[str, torch.Tensor]) -> dict | None:
    """``non-finite`` with counts: ``parts`` maps what was checked (codes, ...) to one bool per row (True = bad)."""
    bad = torch.stack([mask.cpu() for mask in parts.values()]).any(dim=0)
    if not bool(bad.any()):
        return None
    detail = ", ".join(f"{name}: {int(mask.sum())}" for name, mask in parts.items() if bool(mask.any()))
    return {"flag": "non-finite", "count": int(bad.sum()), "of": int(bad.numel()),
            "message": f"{int(bad.sum())} of {bad.numel()} rows hold NaN/inf values ({detail}); their metrics are "
                       "not numbers, so every mean in the report says how many rows it averages"}


def _unbounded_check(attack, model, bind, shape, clean) -> list[dict]:
    """Run the attack on a few samples with a radius that covers the whole pixel box.

    The rows (trial 0, restart 0, the first images) and their random starts do not depend on lambda, so
    with ``attack.unbounded_check_memo`` set the flags of a (model, rows) pair are computed once.
    """
    n_lambdas, trials, restarts, n_images = shape
    count = min(UNBOUNDED_SAMPLES, n_images)
    cached = bind(torch.arange(count))  # lambda index 0, trial 0, restart 0
    memo = attack.unbounded_check_memo
    if memo is None:
        return _run_unbounded_check(attack, cached, clean[0, :count])
    key = (id(model), tensor_digest({"x": cached.x, "seeds": cached.seeds, "targets": cached.targets,
                                     "labels": cached.labels, "target_classes": cached.target_classes}))
    if key not in memo or memo[key][0] is not model:  # the model kept alive beside its id: never a reused id
        memo[key] = (model, _run_unbounded_check(attack, cached, clean[0, :count]))
    return [dict(flag) for flag in memo[key][1]]


def _run_unbounded_check(attack, cached, start: torch.Tensor) -> list[dict]:
    count = len(cached)
    dims = cached.x[0].numel()
    diameter = math.sqrt(dims) if attack.norm == "l2" else 1.0
    # A copy: the sweep caches the problem it bound, and its threat must stay the sweep's.
    problem = dataclasses.replace(cached, threat=Threat(torch.full((count,), diameter, device=cached.x.device),
                                                        attack.norm))
    result = attack.optimize(problem)
    problem.threat.check(problem.x, result.x_adv)
    with torch.no_grad():
        reached = problem.values(result.x_adv)
    missed = reached > UNBOUNDED_REACH * start
    if not bool(missed.any()):
        return []
    ratios = ", ".join(f"{float(r):.3g}" for r in (reached / start)[missed])
    return [{"flag": "unbounded-target-missed", "count": int(missed.sum()), "of": count,
             "message": f"with an unbounded radius the latent attack stayed at {ratios} of the clean distance "
                        f"to the target code (expected < {UNBOUNDED_REACH}) on {int(missed.sum())} of {count} "
                        "samples; the optimizer cannot reach reachable targets"}]
