"""Carlini & Wagner's L2 attack on an image classifier, through torchattacks ``CW``.

Adam on ||d||^2 + c * margin in tanh space; a minimum-norm attack (see :mod:`aerobust.attacks.classifier`):
at radius lambda its result counts only where it fools the classifier within lambda.

Paper: Carlini and Wagner, Towards evaluating the robustness of neural networks (IEEE S&P 2017).
Distance: L2, minimum norm; thresholded at each lambda.
Arguments: c (float, 10.0), lr (float, 0.01), steps (int, 100) and the options of :class:`aerobust.attacks.Attack`.
Shape: x (N, C, H, W) in [0, 1], labels (N,) -> SweepResult.x_adv (L, trials, N, C, H, W).

Examples::
    >>> attack = ATTACKS.create("classifier-cw", c=10.0, steps=100)
    >>> result = attack.sweep(cnn, x, [1.0, 2.0], trials=1, seed=0, labels=y)
"""
from __future__ import annotations

from ..registry import register_attack
from .classifier import MinimumNormAttack, require_positive, require_torchattacks


@register_attack("classifier-cw")
class CarliniWagnerAttack(MinimumNormAttack):
    """Carlini & Wagner's L2 attack (torchattacks ``CW``): Adam on ||d||^2 + c * margin in tanh space.

    Options: ``c`` (10.0), ``lr`` (0.01), ``steps`` (100).
    """

    def __init__(self, *, c: float = 10.0, lr: float = 0.01, steps: int = 100, **options):
        super().__init__(steps=steps, **options)
        require_positive(c=c, lr=lr)
        self.c, self.lr = float(c), float(lr)

    def search(self, problem):
        attack = require_torchattacks().CW(problem.model, c=self.c, steps=self.settings.steps, lr=self.lr)
        return attack(problem.x, problem.labels)

    def config(self) -> dict:
        return {**super().config(), "optimizer": "torchattacks.CW", "c": self.c, "lr": self.lr}
