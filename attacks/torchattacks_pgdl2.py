"""Plugin example: torchattacks' PGDL2 on the latent classifier ``head(encode(x))``.

Load with ``aerobust audit --plugin attacks/torchattacks_pgdl2.py --attack torchattacks-pgdl2`` or
``aerobust.registry.load_plugin("attacks/torchattacks_pgdl2.py")``. The aerobust base class does the
rest: frozen eval mode, device, lambda/trial/restart bookkeeping, threat check, worst case, flags.

torchattacks draws its random start from torch's global generator, so this plugin seeds that
generator per call (from the first sample's seed): reruns are identical, but a sample's result
depends on the other samples sharing its radius in the call.
"""
import torch

from aerobust.attacks import Attack, OptimizationResult, require_torchattacks
from aerobust.classifiers import AutoencoderClassifier
from aerobust.registry import register_attack


@register_attack("torchattacks-pgdl2")
class TorchattacksPGDL2(Attack):
    name = "torchattacks-pgdl2"
    objective_name = "latent-classifier"  # the attack loss reported: cross-entropy of the true label
    needs_classifier = True

    def optimize(self, problem):
        torchattacks = require_torchattacks()
        if self.norm != "l2":
            raise ValueError("this plugin wraps PGDL2; use norm='l2'")
        network = AutoencoderClassifier(problem.model, problem.classifier)
        radii = problem.threat.radii(problem.x)
        x_adv = problem.x.clone()
        for radius in radii.unique().tolist():
            rows = torch.nonzero(radii == radius).flatten()
            attack = torchattacks.PGDL2(network, eps=radius, alpha=self.step_size * radius,
                                        steps=self.steps, random_start=self.random_start)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(problem.seeds[rows[0].cpu()]))
                x_adv[rows] = attack(problem.x[rows], problem.labels[rows])
        return OptimizationResult(x_adv)
