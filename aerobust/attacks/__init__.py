"""The attack engine: threat-checked, batched, seeded attacks on autoencoders.

``ATTACKS.create(name, **options)`` builds an :class:`Attack`; ``attack.sweep(model, x, lambdas,
trials, seed, ...)`` returns a :class:`SweepResult`. Custom attacks subclass :class:`Attack`,
override ``optimize`` and register with ``@register_attack("name")``.
"""
from ..registry import register_attack
from .base import Attack
from .problem import AttackProblem, OptimizationResult, SweepResult, derive_seed
from .sweep import choose_targets
from .builtin import LatentAttack, LatentClassifierAttack, MaxDamageAttack
from .optimizers import OPTIMIZERS, SCHEDULES

__all__ = [
    "Attack", "AttackProblem", "OptimizationResult", "SweepResult", "choose_targets", "derive_seed",
    "LatentAttack", "MaxDamageAttack", "LatentClassifierAttack", "OPTIMIZERS", "SCHEDULES",
    "register_attack",
]
