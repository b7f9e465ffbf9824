"""The attack engine: threat-checked, batched, seeded attacks on autoencoders and on classifiers.

``ATTACKS.create(name, **options)`` builds an :class:`Attack`; ``attack.sweep(model, x, lambdas,
trials, seed, ...)`` returns a :class:`SweepResult`. Custom attacks subclass :class:`Attack`,
override ``optimize`` (or pick a registered optimizer) and register with ``@register_attack("name")``.

Modules, each importing only those above it:
  problem     the contract: AttackProblem, OptimizationResult, SweepResult, per-sample seeds
  chunking    how many samples one optimizer call may take on this device
  settings    OptimizerSettings: one frozen, checked settings class per optimizer
  optimizers  PGD, APGD, FGSM and the legacy L-BFGS-B with their settings, registered in OPTIMIZERS;
              projected_step, the one projected gradient step; EarlyStop, the per-sample early stopping
  quasi_newton  the projected quasi-Newton optimizer ("pqn") and its settings
  sanity      the AutoAttack-style flags of a finished sweep
  sweep       the engine: lambdas x trials x restarts x images, lambda -> radius, threat checks, worst case
  base        Attack, the plugin API (objective from OBJECTIVES + optimizer + its settings object)
  latent, max_damage, latent_classifier, latent_kl, latent_skl, max_kl, jacobian, universal, random_noise
              the registered attacks on autoencoders, one per module (random_noise: the baseline, no optimizer)
  classifier  the attack on image classifiers and the base of its minimum-norm attacks, one per module:
              classifier_cw, classifier_lbfgs, classifier_deepfool
  ensemble    the worst case over several optimizers of one attack (--ensemble)
"""
from ..registry import register_attack
from .base import Attack
from .problem import AttackProblem, OptimizationResult, SweepResult, derive_seed
from .sweep import choose_targets
from .latent import LatentAttack
from .max_damage import MaxDamageAttack
from .latent_classifier import LatentClassifierAttack
from .latent_kl import LatentKLAttack
from .latent_skl import LatentSymmetricKLAttack
from .max_kl import MaxKLAttack
from .jacobian import JacobianAttack
from .universal import UniversalAttack
from .random_noise import RandomNoiseAttack
from ..registry import OPTIMIZERS
from .classifier import ClassifierAttack, MinimumNormAttack, require_torchattacks, within_budget
from .classifier_cw import CarliniWagnerAttack
from .classifier_lbfgs import PenaltyLBFGSAttack
from .classifier_deepfool import DeepFoolAttack
from .optimizers import SCHEDULES
from . import quasi_newton  # noqa: F401  registers the "pqn" optimizer
from .settings import OptimizerSettings

__all__ = [
    "Attack", "AttackProblem", "OptimizationResult", "SweepResult", "choose_targets", "derive_seed",
    "LatentAttack", "MaxDamageAttack", "LatentClassifierAttack", "LatentKLAttack", "LatentSymmetricKLAttack",
    "MaxKLAttack", "JacobianAttack", "UniversalAttack", "OPTIMIZERS", "SCHEDULES", "OptimizerSettings",
    "register_attack", "ClassifierAttack", "MinimumNormAttack", "CarliniWagnerAttack", "PenaltyLBFGSAttack",
    "DeepFoolAttack", "require_torchattacks", "within_budget",
]
