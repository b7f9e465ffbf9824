"""AutoAttack-style sanity checks on a finished sweep; each problem becomes a flag dict, never a print.

Flags: ``nan-gradient``, ``zero-gradient`` (gradient masking or a flat objective), ``non-monotone-lambda``
(the worst case over nested balls must not weaken as lambda grows), ``weaker-than-noise`` (random
noise of the full radius beats the attack), ``unbounded-target-missed`` (with a radius covering the
whole box the latent attack should reach its target code).
"""
from __future__ import annotations

import math

import torch

from ..threat import Threat, seeded_noise
from .base import _seeds

# Relative slack before a comparison between two attack losses counts as a real difference.
MONOTONE_RTOL = 1e-2
NOISE_RTOL = 1e-3
# The unbounded latent attack must end closer to the target code than this fraction of x's distance.
UNBOUNDED_REACH = 0.1
UNBOUNDED_SAMPLES = 4

FLAG_ORDER = ("nan-gradient", "zero-gradient", "non-monotone-lambda", "weaker-than-noise", "unbounded-target-missed")
# Flags that count samples: the flags of a sweep split into image ranges add up (aerobust.distributed).
PER_SAMPLE_FLAGS = {
    "nan-gradient": "{count} of {of} attacked samples had NaN/inf input gradients (set to 0); the model or "
                    "objective is numerically unstable there",
    "zero-gradient": "{count} of {of} attacked samples had an all-zero input gradient at the start; a flat or "
                     "masked objective makes the attack loss overstate robustness",
    "non-monotone-lambda": "{count} (trial, image) pairs got a weaker attack at a larger lambda (by > "
                           f"{MONOTONE_RTOL:.0%}); the optimizer does not find the worst case, use more steps or "
                           "restarts",
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

    order = sorted(range(n_lambdas), key=lambda i: lambdas[i])
    strength = _strength(loss, maximize)[order]
    if n_lambdas > 1:
        lower, higher = strength[:-1], strength[1:]
        distinct = torch.tensor([lambdas[b] > lambdas[a] for a, b in zip(order[:-1], order[1:])])
        weaker = (higher < lower - MONOTONE_RTOL * lower.abs() - 1e-6) & distinct[:, None, None].to(loss.device)
        count = int(weaker.sum())
        if count:
            flags.append(per_sample_flag("non-monotone-lambda", count, int(weaker.numel())))

    noise_count, noise_total = 0, 0
    for l, lam in enumerate(lambdas):
        if lam <= 0:
            continue
        rows = torch.tensor([((l * trials + t) * restarts) * n_images + n
                             for t in range(trials) for n in range(n_images)])
        problem = bind(rows)
        trial_of = torch.arange(trials).repeat_interleave(n_images)
        ids = image_ids.repeat(trials)
        normal, _ = seeded_noise(_seeds(seed, "noise", trial_of.tolist(), ids.tolist()),
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
        flags.extend(_unbounded_check(attack, bind, shape, clean))
    return flags


def _unbounded_check(attack, bind, shape, clean) -> list[dict]:
    """Run the attack on a few samples with a radius that covers the whole pixel box."""
    n_lambdas, trials, restarts, n_images = shape
    count = min(UNBOUNDED_SAMPLES, n_images)
    problem = bind(torch.arange(count))  # lambda index 0, trial 0, restart 0
    dims = problem.x[0].numel()
    diameter = math.sqrt(dims) if attack.norm == "l2" else 1.0
    problem.threat = Threat(torch.full((count,), diameter, device=problem.x.device), attack.norm)
    result = attack.optimize(problem)
    problem.threat.check(problem.x, result.x_adv)
    with torch.no_grad():
        reached = problem.values(result.x_adv)
    start = clean[0, :count]
    missed = reached > UNBOUNDED_REACH * start
    if not bool(missed.any()):
        return []
    ratios = ", ".join(f"{float(r):.3g}" for r in (reached / start)[missed])
    return [{"flag": "unbounded-target-missed", "count": int(missed.sum()), "of": count,
             "message": f"with an unbounded radius the latent attack stayed at {ratios} of the clean distance "
                        f"to the target code (expected < {UNBOUNDED_REACH}) on {int(missed.sum())} of {count} "
                        "samples; the optimizer cannot reach reachable targets"}]
