"""The attack plugin API: :class:`Attack`, an objective plus an optimizer plus their settings.

A custom attack subclasses :class:`Attack` and overrides ``optimize(problem) -> OptimizationResult``
(see :mod:`aerobust.attacks.problem` for the contract); ``sweep`` runs the engine in
:mod:`aerobust.attacks.sweep`, which checks, chunks and bookkeeps whatever ``optimize`` returns.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Sequence

import torch
from torch import nn

from ..errors import AerobustError
from ..objectives import Objective, make_objective
from ..threat import BUDGETS, NORMS, budget_norm
from ..registry import OPTIMIZERS
from .chunking import images_per_chunk
from .optimizers import settings_class_of
from .problem import AttackProblem, OptimizationResult, SweepResult, input_gradient
from .settings import OptimizerSettings, whole_number
from .sweep import run_sweep


class Attack:
    """An optimizer over a threat for an objective; subclasses set ``objective_name``.

    Options (plain keywords, all recorded in ``config()``):
      optimizer: "pgd" (batched projected gradient, the default unless the attack's ``default_optimizer``
        names another: the latent attack runs "pqn", maximum damage and the latent classifier
        "pgd-halving"), "pgd-halving" (PGD whose step halves per sample on a stall, each sample
        leaving once it stops gaining), "apgd" (adaptive step size and
        momentum, Croce & Hein 2020), "pqn" (batched projected quasi-Newton: L-BFGS directions,
        backtracked per sample), "lbfgs-legacy" (scipy L-BFGS-B per image, the reference protocol)
        or "fgsm" (one full-radius step); ``aerobust list optimizers`` names them all.
      The chosen optimizer's settings, and no other's (another optimizer's option is refused with
        the list of the chosen one's):
        pgd: steps (100), step_size (0.25, first step as a fraction of lambda), schedule ("cosine",
          "linear", "step" or "constant" decay of it), random_start (True: start uniformly in the
          ball, else at x), early_stop (None: never; else a sample leaves the batch once its best
          loss has fallen by less than early_stop_rtol (0.0: by nothing) times its size for this
          many steps).
        pqn: steps (48 iterations, steps + 1 forward+backward evaluations), lbfgs_memory (8 pairs),
          first_step (0.25, the gradient step without pairs as a fraction of lambda), random_start
          (True), early_stop and early_stop_rtol (as PGD's).
        pgd-halving: steps (100, the cap per sample), step_size (0.25, first step as a fraction of lambda),
          patience (4) and rtol (1e-4: a stall is this many steps without a gain of this share of the best
          loss), halvings (3: the stall after this many halvings ends the sample), random_start (True).
        apgd: steps (100), random_start (True).  fgsm: random_start (True).
        lbfgs-legacy: lbfgs_memory (25), lbfgs_factr (10.0), lbfgs_pgtol (1e-5), lbfgs_maxiter (15000).
      restarts: random restarts (worst case kept per sample); defaults to 2 for PGD and 1 for the others
        (the legacy protocol had one start).
      An attack may set other defaults per optimizer (``optimizer_defaults``, settings and restarts; the
        user's options win): the latent attack runs pqn, one start of at most 96 steps with early stopping
        after 12 steps under a 1e-4 relative gain, and PGD, if asked for, 200 x 1; maximum damage runs PGD
        100 x 2 with early stopping after 24 such steps; the latent classifier runs pgd-halving with 2
        restarts (reports/attack-strength).
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
      sanity_checks: run the AutoAttack-style checks that fill ``SweepResult.flags``.

    ``self.settings`` is the settings object the optimizer that runs reads: an instance of the
    class the registered optimizer declared, or, for a subclass with its own ``optimize``, of its
    ``settings_class`` attribute. ``config()`` records it.
    """

    name = "attack"
    objective_name: str | None = None
    # The settings an overriding optimize() reads (an OptimizerSettings subclass); None: the optimizer's.
    settings_class: type[OptimizerSettings] | None = None
    needs_targets = False
    needs_classifier = False
    # True when one image's result depends on the other images attacked with it (a pattern fitted over
    # the set): such an attack must see the audit's whole image set at once, never an image range.
    fits_over_image_set = False
    # The optimizer this attack runs unless told otherwise, and per optimizer the settings (and "restarts")
    # it uses unless told otherwise, where its objective needs another optimizer or another balance of steps
    # and restarts than the engine's defaults (measured: reports/attack-strength).
    default_optimizer = "pgd"
    optimizer_defaults: dict = {}

    def __init__(self, *, optimizer: str | None = None, restarts: int | None = None, norm: str | None = None,
                 budget: str | None = None, batch_size: int | str = "auto", sanity_checks: bool = True,
                 compile: str | None = None, **options):
        optimizer = self.default_optimizer if optimizer is None else optimizer
        if optimizer not in OPTIMIZERS:
            raise AerobustError(f"unknown optimizer '{optimizer}'; use one of {', '.join(OPTIMIZERS.list())}")
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
        norms = settings_class_of(OPTIMIZERS.get(optimizer)).norms
        if norm not in norms:
            raise AerobustError(f"optimizer '{optimizer}' is defined for the {' or '.join(norms)} threat only; "
                                f"use norm='{norms[0]}'")
        defaults = dict(self.optimizer_defaults.get(optimizer, {}))
        default_restarts = defaults.pop("restarts", 2 if optimizer == "pgd" else 1)
        restarts = default_restarts if restarts is None else restarts
        options = {**defaults, **options}
        if batch_size != "auto" and (isinstance(batch_size, str) or int(batch_size) < 1):
            raise AerobustError(f"batch_size must be 'auto' or at least 1, got {batch_size}")
        self.optimizer = optimizer
        self.settings = self._settings(optimizer, options)
        self.restarts = whole_number(1)("restarts", restarts)
        self.norm = norm
        self.budget = budget
        self.batch_size = batch_size if batch_size == "auto" else int(batch_size)
        self.sanity_checks = bool(sanity_checks)
        if compile is not None:
            try:
                torch.compile(input_gradient, backend=compile)  # checks the backend name only
            except Exception as error:
                raise AerobustError(f"compile: {str(error).splitlines()[0]}") from None
        self.compile = compile
        self.compiled_objectives: dict = {}  # objective function -> _CompiledOrEager
        # The unbounded-radius check does not depend on lambda; an owner that keeps its models fixed (the
        # audit) sets a dict here so that the check runs once per model and samples, not once per lambda.
        self.unbounded_check_memo: dict | None = None
        self.objective = self.make_objective(**options)

    @classmethod
    def settings_class_for(cls, optimizer: str) -> type[OptimizerSettings]:
        """The settings class this attack reads when it runs ``optimizer``."""
        return cls.settings_class or settings_class_of(OPTIMIZERS.get(optimizer))

    def _settings(self, optimizer: str, options: dict) -> OptimizerSettings:
        """The chosen optimizer's settings, taken out of ``options`` (the rest are the objective's)."""
        settings_class = self.settings_class_for(optimizer)
        taken = settings_class.names()
        refused = sorted(key for key in options if key not in taken and key in optimizer_setting_names())
        if refused:
            runs = f"attack '{self.name}' runs its own optimizer, which" if self.settings_class \
                else f"optimizer '{optimizer}'"
            raise AerobustError(f"{runs} does not take {', '.join(refused)}; its options are "
                                f"{', '.join(taken) or 'none'}")
        return settings_class(**{key: options.pop(key) for key in taken if key in options})

    # -- what subclasses may override ---------------------------------------------------------
    def make_objective(self, **options) -> Objective:
        if self.objective_name is None:
            raise AerobustError(f"attack {type(self).__name__} sets no objective_name")
        try:
            return make_objective(self.objective_name, **options)
        except TypeError:
            raise AerobustError(f"attack '{self.name}' does not take the option(s) {', '.join(options)}; "
                                "see help(aerobust.attacks.Attack) for the options") from None

    def over_image_set(self, model, x: torch.Tensor, radii: list[float], trials: int, seed: int,
                       image_ids: torch.Tensor) -> ContextManager:
        """What the attack prepares once per sweep from the whole image set, held while it runs.

        The sweep enters it with the frozen model, the checked images on the model's device, the
        absolute radii of its lambdas, the trials, seed and image ids. Nothing for most attacks;
        one with ``fits_over_image_set`` fits its shared pattern here.
        """
        return contextlib.nullcontext()

    def optimize(self, problem: AttackProblem) -> OptimizationResult:
        """Find adversarial images for a flat batch; the base checks and bookkeeps the result."""
        return OPTIMIZERS.get(self.optimizer)(self.settings, problem)

    def config(self) -> dict:
        own = self.settings_class is not None
        return {
            "attack": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "objective": self.objective.config(),
            "optimizer": f"{type(self).__qualname__}.optimize" if own else self.optimizer,
            **self.settings.as_config(), "restarts": self.restarts, "norm": self.norm, "budget": self.budget,
            "batch_size": self.batch_size, "sanity_checks": self.sanity_checks, "compile": self.compile,
        }

    def images_per_chunk(self, trials: int, image_shape) -> int:
        """Consecutive images that share an optimizer call in a sweep (attacks/chunking.py)."""
        return images_per_chunk(self.batch_size, trials * self.restarts, image_shape)

    def __repr__(self):
        return f"{type(self).__name__}(optimizer={self.optimizer!r}, {self.settings}, restarts={self.restarts})"

    def sweep(self, model, x: torch.Tensor, lambdas: Sequence[float] | float, trials: int, seed: int, *,
              targets: torch.Tensor | None = None, labels: torch.Tensor | None = None,
              classifier: nn.Module | None = None, image_ids: torch.Tensor | None = None) -> SweepResult:
        """Attack every image at every lambda in every trial; see :func:`aerobust.attacks.sweep.run_sweep`."""
        return run_sweep(self, model, x, lambdas, trials, seed, targets=targets, labels=labels,
                         classifier=classifier, image_ids=image_ids)


def optimizer_setting_names() -> set[str]:
    """Every option some registered optimizer reads: the options that are no objective's."""
    return {name for _, optimizer in OPTIMIZERS.items() for name in settings_class_of(optimizer).names()}


def options_for(attack_class: type[Attack], optimizer: str, options: dict) -> dict:
    """``options`` without the optimizer settings ``attack_class`` does not read when it runs ``optimizer``.

    For attacks built from one option set with different optimizers (the ensemble's members): each
    takes its own optimizer's settings from the set and leaves the others'.
    """
    taken = attack_class.settings_class_for(optimizer).names()
    others = optimizer_setting_names()
    return {key: value for key, value in options.items() if key in taken or key not in others}
