"""Plugin example: torchattacks' PGDL2 on the latent classifier ``head(encode(x))``.

Load with ``aerobust audit --plugin attacks/torchattacks_pgdl2.py --attacks torchattacks-pgdl2`` or
``aerobust.registry.load_plugin("attacks/torchattacks_pgdl2.py")``. The aerobust base class does the
rest: frozen eval mode, device, lambda/trial/restart bookkeeping, threat check, worst case, flags.

torchattacks draws its random start from torch's global generator, so this plugin seeds that
generator per call (from the first sample's seed): reruns are identical, but a sample's result
depends on the other samples sharing its radius in the call.
"""
import dataclasses

import torch

from aerobust.attacks import Attack, OptimizationResult, require_torchattacks
from aerobust.attacks.settings import OptimizerSettings, finite_number, flag, setting, whole_number
from aerobust.classifiers import AutoencoderClassifier
from aerobust.registry import register_attack


@dataclasses.dataclass(frozen=True)
class PGDL2Settings(OptimizerSettings):
    """What optimize() reads (recorded in configs): PGDL2's steps, alpha as a fraction of lambda, random start."""

    steps: int = setting(100, whole_number(1))
    step_size: float = setting(0.25, finite_number(0, inclusive=False, meaning=" (a fraction of lambda)"))
    random_start: bool = setting(True, flag)


@register_attack("torchattacks-pgdl2")
class TorchattacksPGDL2(Attack):
    """torchattacks' PGDL2 on the latent classifier head(encode(x)), untargeted cross-entropy.

    Paper: Madry et al., Towards deep learning models resistant to adversarial attacks (ICLR 2018).
    Distance: L2 ball of radius lambda (this plugin refuses norm="linf"), inside the [0, 1] box.
    Arguments: steps (default 100), step_size (alpha as a fraction of lambda, default 0.25), random_start
        (default True) and the options of :class:`aerobust.attacks.Attack`; needs labels and a head.
    Shape: x (N, C, H, W) in [0, 1], labels (N,) -> SweepResult.x_adv (L, trials, N, C, H, W).

    Examples::
        >>> attack = ATTACKS.create("torchattacks-pgdl2", steps=40)
        >>> result = attack.sweep(model, x, [1.0], trials=1, seed=0, labels=labels, classifier=head)
    """

    objective_name = "latent-classifier"  # the attack loss reported: cross-entropy of the true label
    needs_classifier = True
    settings_class = PGDL2Settings

    def optimize(self, problem):
        torchattacks = require_torchattacks()
        if self.norm != "l2":
            raise ValueError("this plugin wraps PGDL2; use norm='l2'")
        network = AutoencoderClassifier(problem.model, problem.classifier)
        radii = problem.threat.radii(problem.x)
        x_adv = problem.x.clone()
        for radius in radii.unique().tolist():
            rows = torch.nonzero(radii == radius).flatten()
            attack = torchattacks.PGDL2(network, eps=radius, alpha=self.settings.step_size * radius,
                                        steps=self.settings.steps, random_start=self.settings.random_start)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(problem.seeds[rows[0].cpu()]))
                x_adv[rows] = attack(problem.x[rows], problem.labels[rows])
        return OptimizationResult(x_adv)
