"""The r-robustness margin: per image, the smallest budget at which an attack moves the reconstruction by more than r.

Deterministic models: the image is broken at budget lambda when the maximum-damage attack (eq. 13)
finds ``||f(g(x_a)) - f(g(x))||_2 > r`` with ``||x_a - x|| <= lambda``. VAEs use the probability
criterion of r-robustness (Camuto et al. 2020; Barrett et al. 2022): with independent posterior
draws ``z ~ q(z|x)`` and ``z_a ~ q(z|x_a)``, the image is broken when
``P(||f(z_a) - f(z)||_2 > r) >= 1/2`` (estimated from ``samples`` seeded draws); the attack still
maximizes the damage of the posterior means, so a VAE whose sampling noise alone exceeds r is broken
at lambda = 0.

The margin is found by bisection over lambda in ``[0, lambda_max]``: ``iterations`` halvings leave
it within ``lambda_max / 2**iterations``. Lambda is in the attack's budget unit (``budget``: absolute
L2, per-pixel RMS, L-inf or /255, as in the audit), and every bisection step runs all of the attack's
restarts (each its own seeded start) and keeps each image's worst case, as the audit's sweep does. An attack only lower-bounds the worst-case damage, so the
margin it finds is an upper bound of the true one. Images not broken at ``lambda_max`` get margin
``inf`` (censored: "more than lambda_max") and are counted, never averaged in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .attacks import Attack, AttackProblem
from .attacks.problem import sample_seeds
from .errors import AerobustError
from .registry import ATTACKS
from .runtime import frozen_modules
from .threat import Threat, absolute_radius

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class MarginResult:
    """Per-image margins (``inf`` when not broken at ``lambda_max``) and how they were found."""

    margins: torch.Tensor
    r: float
    lambda_max: float
    criterion: str
    config: dict = field(default_factory=dict)

    @property
    def censored(self) -> int:
        return int(torch.isinf(self.margins).sum())

    def summary(self) -> dict:
        """Counts and quantiles of the finite margins; censored images are counted, not averaged."""
        finite = self.margins[torch.isfinite(self.margins)].double().cpu().numpy()
        quantiles = (np.quantile(finite, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist() if len(finite)
                     else [math.nan] * 5)
        return {"images": len(self.margins), "broken": len(finite), "censored": self.censored,
                "r": self.r, "lambda_max": self.lambda_max, "criterion": self.criterion,
                "q10": quantiles[0], "q25": quantiles[1], "median": quantiles[2], "q75": quantiles[3],
                "q90": quantiles[4]}


def _moved_by_more_than(model, x, x_adv, r: float, samples: int, seed: int) -> torch.Tensor:
    """Per image: does the (stochastic, for VAEs) reconstruction of ``x_adv`` move by more than r?"""
    with torch.no_grad():
        if not model.is_stochastic:
            return (model.reconstruct(x_adv) - model.reconstruct(x)).flatten(1).norm(dim=1) > r
        batch = len(x)
        clean_draws = torch.Generator().manual_seed(seed)
        adv_draws = torch.Generator().manual_seed(seed + 1)
        clean = model.decode(model.sample_latent(x.repeat(samples, 1, 1, 1), clean_draws))
        adversarial = model.decode(model.sample_latent(x_adv.repeat(samples, 1, 1, 1), adv_draws))
        moved = (adversarial - clean).flatten(1).norm(dim=1).view(samples, batch) > r
        return moved.double().mean(dim=0) >= 0.5


def robustness_margins(model, x: torch.Tensor, r: float, *, lambda_max: float, iterations: int = 10,
                       attack: Attack | None = None, samples: int = 64, seed: int = 0,
                       image_ids: torch.Tensor | None = None) -> MarginResult:
    """The r-robustness margin of every image of ``x`` (see the module docstring).

    ``attack`` defaults to the registered ``max-damage`` attack with its default settings (PGD);
    any attack whose objective is eq. 13 can be passed.
    """
    if not r > 0 or not lambda_max > 0 or not math.isfinite(lambda_max):
        raise AerobustError(f"the margin needs r > 0 and a finite lambda_max > 0; got r={r}, lambda_max={lambda_max}")
    if int(iterations) < 1 or int(samples) < 1:
        raise AerobustError("iterations and samples must be at least 1")
    attack = ATTACKS.create("max-damage") if attack is None else attack
    if attack.objective.name != "max-damage":
        raise AerobustError(f"the margin bisects the maximum-damage attack; got the '{attack.objective.name}' objective")
    if attack.fits_over_image_set:
        raise AerobustError(f"the margin bisects each image's own budget; the '{attack.name}' attack fits one pattern "
                            "over the whole image set and cannot give per-image margins: use max-damage")
    x = x.to(model.device)
    ids = torch.arange(len(x)) if image_ids is None else torch.as_tensor(image_ids).long().cpu()
    restarts = int(attack.restarts)
    # lambda is in the attack's budget unit (absolute L2, per-pixel RMS, L-inf, /255), as in the audit
    radius_per_lambda = absolute_radius(attack.budget, 1.0, x.shape[1:])

    def broken(rows: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
        """Attack ``rows`` at their own lambdas with every restart the audit runs (each row and restart
        its own seeded start), keep each image's worst case, and test the criterion on it."""
        repeated = rows.repeat(restarts)
        restart = torch.arange(restarts).repeat_interleave(len(rows))
        images = x[repeated.to(x.device)]
        radii = (lambdas.repeat(restarts) * radius_per_lambda).to(dtype=x.dtype, device=x.device)
        threat = Threat(radii, attack.norm)
        problem = AttackProblem(images, threat, attack.objective.bind(model, images),
                                sample_seeds(seed, "margin", ids[repeated].tolist(), restart.tolist()), model)
        x_adv = attack.optimize(problem).x_adv.detach() if bool((radii > 0).any()) else images
        threat.check(images, x_adv)
        with torch.no_grad():
            damage = problem.values(x_adv).view(restarts, len(rows))
        worst = damage.argmax(dim=0)  # the maximum-damage objective is maximized
        x_worst = x_adv.view(restarts, len(rows), *x.shape[1:])[worst, torch.arange(len(rows))]
        return _moved_by_more_than(model, x[rows.to(x.device)], x_worst, r, int(samples), seed).cpu()

    every = torch.arange(len(x))
    with frozen_modules(model):
        low = torch.zeros(len(x), dtype=torch.float64)
        high = torch.full((len(x),), float(lambda_max), dtype=torch.float64)
        at_zero = broken(every, low) if model.is_stochastic else torch.zeros(len(x), dtype=torch.bool)
        at_max = broken(every, high)
        open_rows = torch.nonzero(at_max & ~at_zero).flatten()
        for _ in range(int(iterations) if len(open_rows) else 0):
            middle = (low[open_rows] + high[open_rows]) / 2
            hit = broken(open_rows, middle)
            high[open_rows] = torch.where(hit, middle, high[open_rows])
            low[open_rows] = torch.where(hit, low[open_rows], middle)
    margins = torch.where(at_zero, torch.zeros_like(high), high)
    margins = torch.where(at_max | at_zero, margins, torch.full_like(high, math.inf))
    criterion = ("P(||f(z_a) - f(z)|| > r) >= 1/2 over posterior draws" if model.is_stochastic
                 else "||f(g(x_a)) - f(g(x))|| > r")
    config = {"attack": attack.config(), "restarts": restarts, "budget": attack.budget,
              "iterations": int(iterations), "samples": int(samples), "seed": int(seed),
              "resolution": float(lambda_max) / 2 ** int(iterations), "image_ids": ids.tolist()}
    return MarginResult(margins, float(r), float(lambda_max), criterion, config)


@dataclass
class MarginRun:
    """The margins of every model of an audit config, and what their views need; ``report.margin`` draws them."""

    margins: "pd.DataFrame"  # model, image_id, margin (inf: not broken up to lambda_max)
    summary: "pd.DataFrame"  # one row per model (the index): counts, censored images, quantiles
    lambda_max: float
    budget: str  # the unit of lambda (the attack's budget)


def run_margins(config, out_dir, *, r: float, lambda_max: float, iterations: int = 10, samples: int = 64,
                device: str = "auto") -> MarginRun:
    """Margins of every model of an audit config on the audit's own images; writes margins.csv and the manifest.

    ``config`` is an :class:`aerobust.audit.AuditConfig` (models, data, images, seed and the
    ``max-damage`` entry of ``attack_options``); the images are the ones its audit attacks.
    """
    import pandas as pd

    from .audit import Audit, Plan
    from .datasets import load_dataset
    from .output_folder import check_output_folder, claim_output_folder
    from .runtime import write_manifest

    manifest_config = {**config.to_dict(), "r": r, "lambda_max": lambda_max, "iterations": iterations,
                       "samples": samples}
    check_output_folder(out_dir, "margin", manifest_config)
    audit = Audit(config, out_dir, device=device, quiet=True)
    attack = ATTACKS.create("max-damage", **config.attack_options.get("max-damage", {}))
    pool = load_dataset(config.data, config.split, pad_to=config.pad_to, resize=config.resize)
    plan = Plan(pool, config, need_targets=False)
    frames, summaries, models = [], [], {}
    for spec in config.models:
        model, models[spec.label] = audit.load_model(spec, pool)
        result = robustness_margins(model, plan.images, r, lambda_max=lambda_max, iterations=iterations,
                                    attack=attack, samples=samples, seed=config.seed, image_ids=plan.image_ids)
        frames.append(pd.DataFrame({"model": spec.label, "image_id": plan.image_ids.numpy(),
                                    "margin": result.margins.numpy()}))
        summaries.append({"model": spec.label, **result.summary()})
    margins = pd.concat(frames, ignore_index=True)
    out_dir = Path(out_dir)
    claim_output_folder(out_dir, "margin", manifest_config)
    margins.to_csv(out_dir / "margins.csv", index=False)
    write_manifest(out_dir, command="margin", config=manifest_config,
                   seed=config.seed, device=audit.device, models=models, attack=result.config["attack"],
                   resolution=result.config["resolution"], plan=plan.as_dict())
    return MarginRun(margins, pd.DataFrame(summaries).set_index("model"), float(lambda_max), attack.budget)
