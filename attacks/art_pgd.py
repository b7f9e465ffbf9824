"""Plugin example: ART's ProjectedGradientDescent (L2) on the latent classifier, via PyTorchClassifier.

Load with ``aerobust audit --plugin attacks/art_pgd.py --attacks art-pgd``. ART works on numpy arrays, one radius per
call; its random initialisation is turned off so results are reproducible. ART's own L2 projection
rescales after clipping, which can land a hair outside the ball in float32, so the result is
projected exactly onto the threat once more (a no-op for points already inside).
"""
import dataclasses

import numpy as np
import torch

from aerobust.attacks import Attack, OptimizationResult
from aerobust.attacks.settings import OptimizerSettings, finite_number, setting, whole_number
from aerobust.classifiers import AutoencoderClassifier
from aerobust.registry import register_attack


@dataclasses.dataclass(frozen=True)
class ArtPGDSettings(OptimizerSettings):
    """What optimize() reads (recorded in configs): ART's iterations and its step as a fraction of lambda."""

    steps: int = setting(100, whole_number(1))
    step_size: float = setting(0.25, finite_number(0, inclusive=False, meaning=" (a fraction of lambda)"))


@register_attack("art-pgd")
class ArtPGD(Attack):
    """ART's projected gradient descent on the latent classifier head(encode(x)), untargeted cross-entropy.

    Paper: Madry et al., Towards deep learning models resistant to adversarial attacks (ICLR 2018).
    Distance: L2 (default) or L-inf ball of radius lambda, inside the [0, 1] box.
    Arguments: steps (default 100), step_size (fraction of lambda, default 0.25) and the options of
        :class:`aerobust.attacks.Attack`; needs labels and a classifier head.
    Shape: x (N, C, H, W) in [0, 1], labels (N,) -> SweepResult.x_adv (L, trials, N, C, H, W).

    Examples::
        >>> attack = ATTACKS.create("art-pgd", steps=40)
        >>> result = attack.sweep(model, x, [1.0], trials=1, seed=0, labels=labels, classifier=head)
    """

    objective_name = "latent-classifier"
    needs_classifier = True
    settings_class = ArtPGDSettings

    def optimize(self, problem):
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        x = problem.x
        network = AutoencoderClassifier(problem.model, problem.classifier)
        num_classes = int(problem.classifier(problem.model.encode(x[:1])).shape[1])
        estimator = PyTorchClassifier(
            model=network, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
            nb_classes=num_classes, clip_values=(0.0, 1.0),
            device_type="gpu" if x.device.type == "cuda" else "cpu")
        radii = problem.threat.radii(x)
        x_adv = x.clone()
        for radius in radii.unique().tolist():
            rows = torch.nonzero(radii == radius).flatten()
            attack = ProjectedGradientDescent(
                estimator, norm=2 if self.norm == "l2" else np.inf, eps=radius,
                eps_step=self.settings.step_size * radius, max_iter=self.settings.steps, num_random_init=0,
                batch_size=len(rows), verbose=False)
            images = x[rows].detach().cpu().numpy()
            labels = problem.labels[rows].cpu().numpy()
            adversarial = torch.from_numpy(attack.generate(x=images, y=labels)).to(x.device, x.dtype)
            x_adv[rows] = adversarial
        return OptimizationResult(problem.threat.apply(x, x_adv - x))
