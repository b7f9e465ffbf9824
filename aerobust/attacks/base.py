"""The attack plugin API: :class:`Attack`, an objective plus an optimizer plus their settings.

A custom attack subclasses :class:`Attack` and overrides ``optimize(problem) -> OptimizationResult``
(see :mod:`aerobust.attacks.problem` for the contract); ``sweep`` runs the engine in
:mod:`aerobust.attacks.sweep`, which checks, chunks and bookkeeps whatever ``optimize`` returns.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import AerobustError
from ..objectives import Objective, make_objective
from ..threat import BUDGETS, NORMS, budget_norm
from ..registry import OPTIMIZERS
from .chunking import images_per_chunk
from .optimizers import SCHEDULES
from .problem import AttackProblem, OptimizationResult, SweepResult, input_gradient
from .sweep import run_sweep


class Attack:
    """An optimizer over a threat for an objective; subclasses set ``objective_name``.

    Options (plain keywords, all recorded in ``config()``):
      optimizer: "pgd" (batched projected gradient, default), "apgd" (adaptive step size and
        momentum, Croce & Hein 2020; reads steps and random_start only), "lbfgs-legacy" (scipy L-BFGS-B per
        image, the reference protocol) or "fgsm" (one full-radius step).
      steps, restarts: PGD iterations and random restarts (worst case kept per sample); restarts
        defaults to 2 for PGD and 1 for APGD, FGSM and the legacy protocol (which had one start).
        The PGD default, 100 steps x 2 restarts, reached the same median loss as 200 x 3 on the
        reference MLP AE (bench/audit_speed.py) at a third of the cost.
      step_size: first PGD step as a fraction of lambda; schedule: "cosine", "linear", "step" or
        "constant" decay of it. random_start: start uniformly in the ball (else at x).
      early_stop: stop a sample after this many steps without improvement (None: never).
      budget: the unit of lambda (threat.BUDGETS): "l2" (absolute L2 radius, the paper's), "rms"
        (per-pixel RMS, radius lambda * sqrt(C*H*W)), "linf" (absolute L-inf) or "linf-255"
        (L-inf in 8-bit levels, lambda / 255); the absolute radii are in ``SweepResult.radii``.
      norm: "l2" or "linf"; defaults to the budget's norm (and must agree with it).
      batch_size: samples per optimizer call; "auto" (default) derives it from the image size alone.
        Which samples share a call depends on the configuration only, never on free memory or
        torchrun ranks (attacks/chunking.py); an out-of-memory error halves a call and retries it,
        recorded as chunk_halvings.
      compile: a torch.compile backend ("inductor", "cudagraphs", "eager", ...) for the objective's
        forward (and, through it, its backward); None (default) runs eagerly. If compiling or a
        compiled call fails, the sweep falls back to eager code and says why in its config.
      lbfgs_memory, lbfgs_factr, lbfgs_pgtol, lbfgs_maxiter: the legacy optimizer's settings.
      sanity_checks: run the AutoAttack-style checks that fill ``SweepResult.flags``.

    ``config()`` records the settings of the optimizer that runs (``optimizer_settings``): those
    its registered function names, or, for a subclass with its own ``optimize``, the option names
    in its ``settings`` class attribute.
    """

    name = "attack"
    objective_name: str | None = None
    settings: tuple[str, ...] | None = None  # the options an overriding optimize() reads; None: the optimizer's
    needs_targets = False
    needs_classifier = False
    # True when one image's result depends on the other images attacked with it (a pattern fitted over
    # the set): such an attack must see the audit's whole image set at once, never an image range.
    fits_over_image_set = False

    def __init__(self, *, optimizer: str = "pgd", steps: int = 100, restarts: int | None = None,
                 step_size: float = 0.25, schedule: str = "cosine", random_start: bool = True,
                 early_stop: int | None = None, norm: str | None = None, budget: str | None = None,
                 batch_size: int | str = "auto",
                 lbfgs_memory: int = 25, lbfgs_factr: float = 10.0, lbfgs_pgtol: float = 1e-5,
                 lbfgs_maxiter: int = 15000, sanity_checks: bool = True, compile: str | None = None,
                 **objective_options):
        if optimizer not in OPTIMIZERS:
            raise AerobustError(f"unknown optimizer '{optimizer}'; use one of {', '.join(OPTIMIZERS.list())}")
        if schedule not in SCHEDULES:
            raise AerobustError(f"unknown step-size schedule '{schedule}'; use one of {', '.join(SCHEDULES)}")
        if norm is not None and norm not in NORMS:
            raise AerobustError(f"unknown norm '{norm}'; use one of {', '.join(NORMS)}")
        if budget is None:
            budget = norm or "l2"
        if budget not in BUDGETS:
            raise AerobustError(f"unknown budget unit '{budget}'; use one of {', '.join(BUDGETS)}")
        if norm is not None and norm != budget_norm(budget):
            raise AerobustError(f"budget '{budget}' is measured in {budget_norm(budget)}, not norm '{norm}'; "
                                "drop the norm option")
        norm = budget_norm(budget)
        if optimizer == "lbfgs-legacy" and norm != "l2":
            raise AerobustError("the legacy L-BFGS-B protocol is defined for the L2 threat only; use norm='l2'")
        if restarts is None:
            restarts = 2 if optimizer == "pgd" else 1
        if batch_size != "auto" and (isinstance(batch_size, str) or int(batch_size) < 1):
            raise AerobustError(f"batch_size must be 'auto' or at least 1, got {batch_size}")
        for key, value in (("steps", steps), ("restarts", restarts)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() \
                    or int(value) < 1:
                raise AerobustError(f"{key} must be a whole number of at least 1, got {value!r}")
        if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
            raise AerobustError(f"step_size must be > 0 (a fraction of lambda), got {step_size}")
        if early_stop is not None and int(early_stop) < 1:
            raise AerobustError("early_stop must be None or a patience of at least 1 step")
        self.optimizer = optimizer
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.step_size = float(step_size)
        self.schedule = schedule
        self.random_start = bool(random_start)
        self.early_stop = None if early_stop is None else int(early_stop)
        self.norm = norm
        self.budget = budget
        self.batch_size = batch_size if batch_size == "auto" else int(batch_size)
        self.lbfgs_memory = int(lbfgs_memory)
        self.lbfgs_factr = float(lbfgs_factr)
        self.lbfgs_pgtol = float(lbfgs_pgtol)
        self.lbfgs_maxiter = int(lbfgs_maxiter)
        self.sanity_checks = bool(sanity_checks)
        if compile is not None:
            try:
                torch.compile(input_gradient, backend=compile)  # checks the backend name only
            except Exception as error:
                raise AerobustError(f"compile: {str(error).splitlines()[0]}") from None
        self.compile = compile
        self.compiled_objectives: dict = {}  # objective function -> _CompiledOrEager
        self.objective = self.make_objective(**objective_options)

    # -- what subclasses may override ---------------------------------------------------------
    def make_objective(self, **options) -> Objective:
        if self.objective_name is None:
            raise AerobustError(f"attack {type(self).__name__} sets no objective_name")
        try:
            return make_objective(self.objective_name, **options)
        except TypeError:
            raise AerobustError(f"attack '{self.name}' does not take the option(s) {', '.join(options)}; "
                                "see help(aerobust.attacks.Attack) for the options") from None

    def optimize(self, problem: AttackProblem) -> OptimizationResult:
        """Find adversarial images for a flat batch; the base checks and bookkeeps the result."""
        return OPTIMIZERS.get(self.optimizer)(self, problem)

    def optimizer_settings(self) -> dict:
        """The settings the optimizer that runs reads, by option name."""
        names = self.settings if self.settings is not None else getattr(OPTIMIZERS.get(self.optimizer), "settings", ())
        return {name: getattr(self, name) for name in names}

    def config(self) -> dict:
        own = self.settings is not None
        return {
            "attack": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "objective": self.objective.config(),
            "optimizer": f"{type(self).__qualname__}.optimize" if own else self.optimizer,
            **self.optimizer_settings(), "restarts": self.restarts, "norm": self.norm, "budget": self.budget,
            "batch_size": self.batch_size, "sanity_checks": self.sanity_checks, "compile": self.compile,
        }

    def images_per_chunk(self, trials: int, image_shape) -> int:
        """Consecutive images that share an optimizer call in a sweep (attacks/chunking.py)."""
        return images_per_chunk(self.batch_size, trials * self.restarts, image_shape)

    def __repr__(self):
        return f"{type(self).__name__}(optimizer={self.optimizer!r}, steps={self.steps}, restarts={self.restarts})"

    def sweep(self, model, x: torch.Tensor, lambdas: Sequence[float] | float, trials: int, seed: int, *,
              targets: torch.Tensor | None = None, labels: torch.Tensor | None = None,
              classifier: nn.Module | None = None, image_ids: torch.Tensor | None = None) -> SweepResult:
        """Attack every image at every lambda in every trial; see :func:`aerobust.attacks.sweep.run_sweep`."""
        return run_sweep(self, model, x, lambdas, trials, seed, targets=targets, labels=labels,
                         classifier=classifier, image_ids=image_ids)
