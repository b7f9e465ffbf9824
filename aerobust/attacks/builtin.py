"""The registered attacks of the paper: eq. 12, eq. 13 and the latent classifier's cross-entropy."""
from __future__ import annotations

from ..registry import register_attack
from .base import Attack


@register_attack("latent")
class LatentAttack(Attack):
    """eq. 12: move the code of x towards the code of a target image of another class."""

    name = "latent"
    objective_name = "latent"
    needs_targets = True


@register_attack("max-damage")
class MaxDamageAttack(Attack):
    """eq. 13: push the reconstruction of x as far as possible from its clean reconstruction."""

    name = "max-damage"
    objective_name = "max-damage"


@register_attack("latent-classifier")
class LatentClassifierAttack(Attack):
    """Cross-entropy of a classifier head on the codes; ``targeted=True`` aims at another class."""

    name = "latent-classifier"
    objective_name = "latent-classifier"
    needs_classifier = True

    def __init__(self, *, targeted: bool = False, **options):
        super().__init__(targeted=targeted, **options)
