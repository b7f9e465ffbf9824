"""Moosavi-Dezfooli et al.'s DeepFool on an image classifier, through ART.

Steps to the linearized nearest decision boundary; a minimum-norm attack (see
:mod:`aerobust.attacks.classifier`): at radius lambda its result counts only where it fools the
classifier within lambda.

Paper: Moosavi-Dezfooli, Fawzi and Frossard, DeepFool: a simple and accurate method to fool deep
    neural networks (CVPR 2016).
Distance: L2, minimum norm; thresholded at each lambda.
Arguments: steps (int, 50), overshoot (float, 0.02) and the options of :class:`aerobust.attacks.Attack`.
Shape: x (N, C, H, W) in [0, 1], labels (N,) -> SweepResult.x_adv (L, trials, N, C, H, W).

Examples::
    >>> attack = ATTACKS.create("classifier-deepfool", steps=50)
    >>> result = attack.sweep(cnn, x, [1.0, 2.0], trials=1, seed=0, labels=y)
"""
from __future__ import annotations

import torch
from torch import nn

from ..classifiers.images import model_device, predict_logits
from ..errors import AerobustError
from ..registry import register_attack
from .classifier import MinimumNormAttack


@register_attack("classifier-deepfool")
class DeepFoolAttack(MinimumNormAttack):
    """Moosavi-Dezfooli et al.'s DeepFool (ART): steps to the linearized nearest decision boundary.

    Options: ``steps`` (50), ``overshoot`` (0.02).
    """

    def __init__(self, *, steps: int = 50, overshoot: float = 0.02, **options):
        super().__init__(steps=steps, **options)
        if not overshoot >= 0:
            raise AerobustError(f"overshoot must be >= 0, got {overshoot}")
        self.overshoot = float(overshoot)

    def search(self, problem):
        from art.attacks.evasion import DeepFool
        from art.estimators.classification import PyTorchClassifier

        network, images = problem.model, problem.x
        num_classes = predict_logits(network, images[:1]).shape[1]
        device = model_device(network)
        estimator = PyTorchClassifier(model=network, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]),
                                      nb_classes=num_classes, clip_values=(0.0, 1.0),
                                      device_type="gpu" if device.type == "cuda" else "cpu")
        attack = DeepFool(estimator, max_iter=self.settings.steps, epsilon=self.overshoot, nb_grads=num_classes,
                          batch_size=len(images), verbose=False)
        adversarial = attack.generate(images.detach().cpu().numpy())
        return torch.from_numpy(adversarial).to(images.device, images.dtype).clamp_(0, 1)

    def config(self) -> dict:
        return {**super().config(), "optimizer": "art.DeepFool", "overshoot": self.overshoot}
