"""The attack engine: threat-checked, batched, seeded attacks on autoencoders and on classifiers.

``ATTACKS.create(name, **options)`` builds an :class:`Attack`; ``attack.sweep(model, x, lambdas,
trials, seed, ...)`` returns a :class:`SweepResult`. Custom attacks subclass :class:`Attack`,
override ``optimize`` and register with ``@register_attack("name")``.
"""
from ..registry import register_attack
from .base import (Attack, AttackProblem, OptimizationResult, SweepResult, choose_targets,
                   derive_seed)
from .builtin import LatentAttack, LatentClassifierAttack, MaxDamageAttack
from .classifier import (CarliniWagnerAttack, ClassifierAttack, DeepFoolAttack, MinimumNormAttack,
                         PenaltyLBFGSAttack, require_torchattacks, within_budget)
from .optimizers import OPTIMIZERS, SCHEDULES

__all__ = [
    "Attack", "AttackProblem", "OptimizationResult", "SweepResult", "choose_targets", "derive_seed",
    "LatentAttack", "MaxDamageAttack", "LatentClassifierAttack", "OPTIMIZERS", "SCHEDULES",
    "register_attack", "ClassifierAttack", "MinimumNormAttack", "CarliniWagnerAttack", "PenaltyLBFGSAttack",
    "DeepFoolAttack", "require_torchattacks", "within_budget",
]
