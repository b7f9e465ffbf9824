"""The latent-classifier attack: cross-entropy of a classifier head on the codes g(x + d).

Paper: Saseendran et al., Trading off Image Quality for Robustness is not Necessary with Regularized
    Deterministic Autoencoders, Table 3 (accuracy of a latent classifier under attack).
Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
Arguments:
    targeted (bool): aim at a reproducible other class instead of away from the label. (Default: False)
    optimizer (str): "pgd-halving", "pgd", "pqn", "apgd", "fgsm" or "lbfgs-legacy" (aerobust list
        optimizers). (Default: "pgd-halving": PGD whose step halves per sample on a stall;
        reports/attack-strength)
    steps (int): optimizer iterations (pgd-halving: the cap per sample). (Default: 100)
    restarts (int): random starts; the worst case per sample is kept. (Default: 2)
    step_size (float): first step as a fraction of lambda. (Default: 0.25)
    budget (str): unit of lambda: "l2", "rms", "linf" or "linf-255". (Default: "l2")
    ...and the other options of :class:`aerobust.attacks.Attack`.
Shape: x (N, C, H, W), labels (N,), classifier codes (N, latent_dim) -> logits (N, K);
    x_adv (L, trials, N, C, H, W).

Examples::
    >>> attack = ATTACKS.create("latent-classifier", targeted=False)
    >>> result = attack.sweep(model, x, [1.0], trials=1, seed=0, labels=labels, classifier=head)
"""
from __future__ import annotations

from ..registry import register_attack
from .base import Attack


@register_attack("latent-classifier")
class LatentClassifierAttack(Attack):
    """Latent-classifier attack: cross-entropy of a classifier head on the codes g(x + d)."""

    objective_name = "latent-classifier"
    needs_classifier = True

    default_optimizer = "pgd-halving"
    optimizer_defaults = {"pgd-halving": {"restarts": 2}}

    def __init__(self, *, targeted: bool = False, **options):
        super().__init__(targeted=targeted, **options)
