"""The attack engine: threat-checked, batched, seeded attacks on autoencoders and on classifiers.

``ATTACKS.create(name, **options)`` builds an :class:`Attack`; ``attack.sweep(model, x, lambdas,
trials, seed, ...)`` returns a :class:`SweepResult`. Custom attacks subclass :class:`Attack`,
override ``optimize`` (or pick a registered optimizer) and register with ``@register_attack("name")``.

Modules, each importing only those above it:
  problem     the contract: AttackProblem, OptimizationResult, SweepResult, per-sample seeds
  chunking    how many samples one optimizer call may take on this device
  optimizers  PGD, FGSM and the legacy L-BFGS-B, registered in OPTIMIZERS
  sanity      the AutoAttack-style flags of a finished sweep
  sweep       the engine: lambdas x trials x restarts x images, threat checks, worst case
  base        Attack, the plugin API (objective from OBJECTIVES + optimizer + settings)
  builtin     the registered attacks
"""
from ..registry import register_attack
from .base import Attack
from .problem import AttackProblem, OptimizationResult, SweepResult, derive_seed
from .sweep import choose_targets
from .builtin import LatentAttack, LatentClassifierAttack, MaxDamageAttack
from ..registry import OPTIMIZERS
from .classifier import (CarliniWagnerAttack, ClassifierAttack, DeepFoolAttack, MinimumNormAttack,
                         PenaltyLBFGSAttack, require_torchattacks, within_budget)
from .optimizers import SCHEDULES

__all__ = [
    "Attack", "AttackProblem", "OptimizationResult", "SweepResult", "choose_targets", "derive_seed",
    "LatentAttack", "MaxDamageAttack", "LatentClassifierAttack", "OPTIMIZERS", "SCHEDULES",
    "register_attack", "ClassifierAttack", "MinimumNormAttack", "CarliniWagnerAttack", "PenaltyLBFGSAttack",
    "DeepFoolAttack", "require_torchattacks", "within_budget",
]
