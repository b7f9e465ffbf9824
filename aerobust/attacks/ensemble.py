"""The ensemble attack: per sample, the worst case over several optimizers of one attack.

An audit's score is only as strong as its optimizer. ``--ensemble`` asks, per (lambda, trial,
image), for the worst case over three members of the configured attack:

- ``default``: the attack as configured (its optimizer, steps and restarts);
- ``extra-restarts``: the same optimizer with more random starts;
- ``reference-lbfgs``: the reference code's L-BFGS-B protocol (``REFERENCE_CODE_LBFGS``), one start.

It is a layer over the sweep engine: each optimizer runs through ``Attack.sweep`` and the worst
case is picked afterwards, so the engine's threat checks, chunking and sanity flags apply to every
member. The default and the extra restarts run as one sweep with ``restarts + extra`` starts: the
start of a restart depends only on (seed, trial, image, restart index), so its first ``restarts``
starts are exactly the default's, and a kept restart index below ``restarts`` means the default
alone reached the worst case. Ties go to the earlier member, so a member is credited only when it
is strictly stronger. ``members`` may leave out ``reference-lbfgs`` (one scipy run per sample, too
slow for a large study on a small machine): the reproduction runs it on a stated subset instead.
"""
from __future__ import annotations

import dataclasses

import torch

from ..errors import AerobustError
from ..registry import ATTACKS
from .base import options_for
from .optimizers import REFERENCE_CODE_LBFGS
from .problem import SweepResult

# In order of precedence on ties; the audit's ``attack_member`` column holds these names.
ENSEMBLE_MEMBERS = ("default", "extra-restarts", "reference-lbfgs")
# The first two are one sweep and always run; the others may be left out.
ONE_SWEEP_MEMBERS, OPTIONAL_MEMBERS = ENSEMBLE_MEMBERS[:2], ENSEMBLE_MEMBERS[2:]
# Engine bookkeeping shared by every member (same lambdas, trials, seed and images).
_SWEEP_KEYS = ("lambdas", "radii", "trials", "seed", "image_ids", "device", "attack_loss", "history", "delta_norm")


@dataclasses.dataclass
class EnsembleResult(SweepResult):
    """A :class:`SweepResult` whose samples each come from the strongest member."""

    member: torch.Tensor | None = None  # (L, T, N) index into ENSEMBLE_MEMBERS of the member kept


class EnsembleAttack:
    """The worst case over the members of one configured attack; ``sweep`` as :meth:`Attack.sweep`."""

    def __init__(self, name: str, options: dict, extra_restarts: int, members=ENSEMBLE_MEMBERS):
        if int(extra_restarts) < 0:
            raise AerobustError(f"the ensemble's extra restarts must be >= 0, got {extra_restarts}")
        check_members(members)
        # One option set for members with two optimizers: each member takes its own optimizer's settings.
        attack_class = ATTACKS.get(name)
        optimizer = options.get("optimizer", attack_class.default_optimizer)
        default_options = options_for(attack_class, optimizer, options)
        self.default = ATTACKS.create(name, **default_options)
        self.extra_restarts = int(extra_restarts)
        self.widened = ATTACKS.create(name, **{**default_options,
                                               "restarts": self.default.restarts + self.extra_restarts})
        self.reference = None
        if "reference-lbfgs" in members:
            reference = REFERENCE_CODE_LBFGS["optimizer"]
            try:
                self.reference = ATTACKS.create(name, **options_for(attack_class, reference, {
                    **options, **REFERENCE_CODE_LBFGS, "restarts": 1}))
            except AerobustError as error:
                raise AerobustError(f"--ensemble includes the reference L-BFGS-B protocol, which refuses attack "
                                    f"'{name}': {error}") from None
        self.members = tuple(m for m in ENSEMBLE_MEMBERS if m in members)
        self.name = self.default.name
        self.objective = self.default.objective
        self.needs_targets = self.default.needs_targets
        self.needs_classifier = self.default.needs_classifier
        self.fits_over_image_set = self.default.fits_over_image_set

    def images_per_chunk(self, trials: int, image_shape) -> int:
        """The largest chunk of images among the members (powers of two: a multiple of every member's)."""
        return max(member.images_per_chunk(trials, image_shape) for member in (self.default, self.widened,
                                                                               self.reference) if member)

    def member_configs(self) -> dict[str, dict]:
        configs = {"default": self.default.config(), "extra-restarts": self.widened.config()}
        if self.reference is not None:
            configs["reference-lbfgs"] = self.reference.config()
        return configs

    def config(self) -> dict:
        default = self.default.config()
        reference = ", and the reference L-BFGS-B" if self.reference is not None else ""
        return {"attack": self.name, "objective": default["objective"], "norm": default["norm"],
                "budget": default["budget"],
                "optimizer": (f"ensemble: worst case per sample of {default['optimizer']} with {self.default.restarts} "
                              f"restart(s), the same with {self.extra_restarts} more{reference}"),
                "ensemble": {"members": list(self.members), "extra_restarts": self.extra_restarts,
                             "ties": "the earlier member is kept", "configs": self.member_configs()}}

    def sweep(self, model, x: torch.Tensor, lambdas, trials: int, seed: int, **inputs) -> EnsembleResult:
        widened = self.widened.sweep(model, x, lambdas, trials, seed, **inputs)
        from_extra = (widened.restart >= self.default.restarts).long()
        flags = [{**flag, "member": "default+extra-restarts"} for flag in widened.flags]
        config = {**self.config(), **{key: widened.config[key] for key in _SWEEP_KEYS if key in widened.config},
                  "member_sweeps": {"default+extra-restarts": widened.config}}
        if self.reference is None:
            return EnsembleResult(**{**vars(widened), "config": config, "member": from_extra, "flags": flags})
        reference = self.reference.sweep(model, x, lambdas, trials, seed, **inputs)
        if self.objective.maximize:
            stronger = reference.attack_loss > widened.attack_loss
        else:
            stronger = reference.attack_loss < widened.attack_loss
        member = torch.where(stronger, torch.full_like(from_extra, 2), from_extra)

        def pick(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
            mask = stronger.view(*stronger.shape, *([1] * (first.dim() - stronger.dim())))
            return torch.where(mask, second, first)

        history = None
        if widened.history is not None and reference.history is not None:
            # L-BFGS-B records one value per evaluation, PGD one per step: the shorter ends in NaN.
            length = max(widened.history.shape[-1], reference.history.shape[-1])
            padded = [torch.nn.functional.pad(h, (0, length - h.shape[-1]), value=float("nan"))
                      for h in (widened.history, reference.history)]
            history = pick(*padded)
        flags += [{**flag, "member": "reference-lbfgs"} for flag in reference.flags]
        config["member_sweeps"]["reference-lbfgs"] = reference.config
        return EnsembleResult(
            x_adv=pick(widened.x_adv, reference.x_adv), attack_loss=pick(widened.attack_loss, reference.attack_loss),
            delta_norm=pick(widened.delta_norm, reference.delta_norm), history=history, lambdas=widened.lambdas,
            radii=widened.radii, trials=widened.trials, flags=flags, config=config, clean_loss=widened.clean_loss,
            restart=torch.where(stronger, torch.zeros_like(widened.restart), widened.restart),
            target_classes=widened.target_classes, member=member)


def check_members(members) -> None:
    """Refuse an unknown member, or leaving out one of the two that are one sweep."""
    unknown = sorted(set(members) - set(ENSEMBLE_MEMBERS))
    missing = [m for m in ONE_SWEEP_MEMBERS if m not in members]
    if unknown or missing:
        raise AerobustError(f"ensemble members must be {', '.join(ENSEMBLE_MEMBERS)} (only "
                            f"{', '.join(OPTIONAL_MEMBERS)} may be left out); got {list(members)}")
