"""The attack base class: sweep bookkeeping, seeding, frozen mode, threat checks, worst case.

An :class:`Attack` pairs an objective with an optimizer. ``sweep`` flattens
lambdas x trials x restarts x images into one batch, hands it to ``optimize`` (chunked by
``batch_size``), checks every returned point against its threat, keeps the per-sample worst case
over restarts and runs the sanity checks. A custom attack subclasses :class:`Attack` and overrides
``optimize(problem) -> OptimizationResult`` only.

Determinism: every random draw of a sample (start point, target class, noise baseline) comes from a
seed derived from ``(seed, trial, image_id, restart)``, never from a shared generator, so a result
does not depend on which other lambdas, trials or images share the call. The start of a
(trial, image, restart) is the same random direction at every lambda, drawn at a radius scaled by
lambda, so the curves over lambda are not blurred by independent starts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import AerobustError, ShapeError
from ..objectives import BoundObjective, Objective, make_objective
from ..runtime import frozen_modules
from .chunking import bytes_per_sample, planned_chunk, run_in_chunks
from ..threat import BUDGETS, NORMS, Threat, absolute_radius, budget_norm


def derive_seed(seed: int, *parts) -> int:
    """A 63-bit seed determined by ``seed`` and ``parts`` alone (stable across runs and platforms)."""
    text = "|".join(str(part) for part in (int(seed), *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def _seeds(seed: int, tag: str, *columns: Sequence) -> torch.Tensor:
    return torch.tensor([derive_seed(seed, tag, *row) for row in zip(*columns)], dtype=torch.long)


def _input_gradient(loss: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """d loss.sum() / d inputs; zero when the loss does not depend on the inputs at all."""
    if not loss.requires_grad:
        return torch.zeros_like(inputs)
    (grad,) = torch.autograd.grad(loss.sum(), inputs, allow_unused=True)
    return torch.zeros_like(inputs) if grad is None else grad


@dataclass
class AttackProblem:
    """One flat batch to attack: images, their threat, the bound objective and per-sample seeds.

    ``model``, ``classifier``, ``labels`` (B,), ``targets`` (B, C, H, W) and ``target_classes`` (B,)
    are the raw inputs of the rows, for custom optimizers that need them (e.g. library attacks on
    the latent classifier); built-in optimizers use only the objective.
    """

    x: torch.Tensor
    threat: Threat
    objective: BoundObjective
    seeds: torch.Tensor
    model: nn.Module | None = None
    classifier: nn.Module | None = None
    labels: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    target_classes: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def select(self, index: torch.Tensor) -> "AttackProblem":
        index = torch.as_tensor(index, dtype=torch.long)
        rows = index.to(self.x.device)
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return AttackProblem(self.x[rows], self.threat.select(index), self.objective.select(rows),
                             self.seeds[index.cpu()], self.model, self.classifier, pick(self.labels),
                             pick(self.targets), pick(self.target_classes))

    def random_start(self) -> torch.Tensor:
        """A feasible random perturbation per sample (uniform in the ball, projected on the box)."""
        return self.threat.random_start(self.x, self.seeds)

    def values(self, x_adv: torch.Tensor) -> torch.Tensor:
        return self.objective.values(x_adv)

    def loss_and_grad(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective values (paper sense) at ``x + delta`` and the gradient of the minimized loss."""
        with torch.enable_grad():
            delta = delta.detach().requires_grad_(True)
            values = self.objective.values(self.x + delta)
            loss = -values if self.objective.maximize else values
            grad = _input_gradient(loss, delta)
        return values.detach(), grad


@dataclass
class OptimizationResult:
    """What ``optimize`` returns: adversarial images, optional per-step values, diagnostics.

    ``history`` is (B, S) objective values in the paper's sense; ``zero_gradient``/``nan_gradient``
    are (B,) masks gradient optimizers fill for the sanity flags.
    """

    x_adv: torch.Tensor
    history: torch.Tensor | None = None
    zero_gradient: torch.Tensor | None = None
    nan_gradient: torch.Tensor | None = None


@dataclass
class SweepResult:
    """Per-sample results of one sweep; leading dims are (lambda, trial, image)."""

    x_adv: torch.Tensor            # (L, T, N, C, H, W)
    attack_loss: torch.Tensor      # (L, T, N), paper sense (eq. 12: lower is stronger; eq. 13: higher)
    delta_norm: torch.Tensor       # (L, T, N), ||x_adv - x||_2
    history: torch.Tensor | None   # (L, T, N, steps) objective value at each iterate, or None
    lambdas: list[float]           # in the attack's budget unit
    radii: list[float]             # the absolute radius of each lambda, in the threat's norm
    trials: int
    flags: list[dict]
    config: dict
    clean_loss: torch.Tensor | None = None    # (T, N) objective at x itself (lambda = 0)
    restart: torch.Tensor | None = None       # (L, T, N) index of the restart that was kept
    target_classes: torch.Tensor | None = None  # (T, N) for the targeted latent-classifier attack

    @property
    def maximize(self) -> bool:
        return bool(self.config["objective"]["maximize"])




class Attack:
    """An optimizer over a threat for an objective; subclasses set ``objective_name``.

    Options (plain keywords, all recorded in ``config()``):
      optimizer: "pgd" (batched projected gradient, default), "lbfgs-legacy" (scipy L-BFGS-B per
        image, the reference protocol) or "fgsm" (one full-radius step).
      steps, restarts: PGD iterations and random restarts (worst case kept per sample); restarts
        defaults to 2 for PGD and 1 for FGSM and the legacy protocol (which had one start).
        The PGD default, 100 steps x 2 restarts, reached the same median loss as 200 x 3 on the
        reference MLP AE (bench/audit_speed.py) at a third of the cost.
      step_size: first PGD step as a fraction of lambda; schedule: "cosine", "linear", "step" or
        "constant" decay of it. random_start: start uniformly in the ball (else at x).
      early_stop: stop a sample after this many steps without improvement (None: never).
      budget: the unit of lambda (threat.BUDGETS): "l2" (absolute L2 radius, the paper's), "rms"
        (per-pixel RMS, radius lambda * sqrt(C*H*W)), "linf" (absolute L-inf) or "linf-255"
        (L-inf in 8-bit levels, lambda / 255); the absolute radii are in ``SweepResult.radii``.
      norm: "l2" or "linf"; defaults to the budget's norm (and must agree with it).
      batch_size: samples per optimizer call; "auto" (default) plans it from a memory probe of the
        model (see attacks/chunking.py). Either way an out-of-memory error halves it and retries;
        samples are independent, so the chunking does not change results.
      compile: a torch.compile backend ("inductor", "cudagraphs", "eager", ...) for the objective's
        forward (and, through it, its backward); None (default) runs eagerly. If compiling or a
        compiled call fails, the sweep falls back to eager code and says why in its config.
      lbfgs_memory, lbfgs_factr, lbfgs_pgtol, lbfgs_maxiter: the legacy optimizer's settings.
      sanity_checks: run the AutoAttack-style checks that fill ``SweepResult.flags``.
    """

    name = "attack"
    objective_name: str | None = None
    needs_targets = False
    needs_classifier = False

    def __init__(self, *, optimizer: str = "pgd", steps: int = 100, restarts: int | None = None,
                 step_size: float = 0.25, schedule: str = "cosine", random_start: bool = True,
                 early_stop: int | None = None, norm: str | None = None, budget: str | None = None,
                 batch_size: int | str = "auto",
                 lbfgs_memory: int = 25, lbfgs_factr: float = 10.0, lbfgs_pgtol: float = 1e-5,
                 lbfgs_maxiter: int = 15000, sanity_checks: bool = True, compile: str | None = None,
                 **objective_options):
        from .optimizers import OPTIMIZERS, SCHEDULES

        if optimizer not in OPTIMIZERS:
            raise AerobustError(f"unknown optimizer '{optimizer}'; use one of {', '.join(OPTIMIZERS)}")
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
            if int(value) < 1:
                raise AerobustError(f"{key} must be at least 1, got {value}")
        if not step_size > 0:
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
                torch.compile(_input_gradient, backend=compile)  # checks the backend name only
            except Exception as error:
                raise AerobustError(f"compile: {str(error).splitlines()[0]}") from None
        self.compile = compile
        self._compiled: dict = {}  # objective function -> _CompiledOrEager
        self.objective = self.make_objective(**objective_options)
        # model -> {(image shape, dtype, device): bytes one more sample costs}; see _chunk_size
        self._bytes_per_sample: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

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
        from .optimizers import OPTIMIZERS

        return OPTIMIZERS[self.optimizer](self, problem)

    def config(self) -> dict:
        return {
            "attack": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "objective": self.objective.config(), "optimizer": self.optimizer, "steps": self.steps,
            "restarts": self.restarts, "step_size": self.step_size, "schedule": self.schedule,
            "random_start": self.random_start, "early_stop": self.early_stop, "norm": self.norm,
            "budget": self.budget,
            "batch_size": self.batch_size, "lbfgs_memory": self.lbfgs_memory,
            "lbfgs_factr": self.lbfgs_factr, "lbfgs_pgtol": self.lbfgs_pgtol, "lbfgs_maxiter": self.lbfgs_maxiter,
            "sanity_checks": self.sanity_checks, "compile": self.compile,
        }

    def _chunk_size(self, model, bind: Callable[[torch.Tensor], "AttackProblem"], rows: torch.Tensor,
                    x: torch.Tensor) -> int:
        """``batch_size``, or for "auto" the samples that fit the device by a probe of the attack's graph."""
        if self.batch_size != "auto":
            return self.batch_size

        def probe(count: int):
            problem = bind(rows[:1].repeat(count))
            delta = torch.zeros_like(problem.x)
            return lambda: problem.loss_and_grad(delta)

        # One probe per model and image shape: an audit sweeps each lambda separately.
        known = self._bytes_per_sample.setdefault(model, {})
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        if key not in known:
            known[key] = bytes_per_sample(probe, x[0])
        fit = planned_chunk(known[key], len(rows), x.device)
        # A power of two: the plan moves less with the free memory of the moment.
        return fit if fit == len(rows) else 1 << (fit.bit_length() - 1)

    def __repr__(self):
        return f"{type(self).__name__}(optimizer={self.optimizer!r}, steps={self.steps}, restarts={self.restarts})"

    # -- the sweep ------------------------------------------------------------------------------
    def sweep(self, model, x: torch.Tensor, lambdas: Sequence[float] | float, trials: int, seed: int, *,
              targets: torch.Tensor | None = None, labels: torch.Tensor | None = None,
              classifier: nn.Module | None = None, image_ids: torch.Tensor | None = None) -> SweepResult:
        """Attack every image at every lambda in every trial; see :class:`SweepResult`."""
        from .sanity import sanity_flags

        lambdas = _check_lambdas(lambdas)
        trials = int(trials)
        if trials < 1:
            raise AerobustError("trials must be at least 1")
        out_device = x.device
        device = getattr(model, "device", x.device)
        x = _check_images(x, model).to(device)
        n_images = x.shape[0]
        image_ids = _check_ids(image_ids, n_images)
        if self.needs_targets:
            if targets is None:
                raise AerobustError(f"attack '{self.name}' needs target images (targets of shape (trials, N, C, H, W))")
            if tuple(targets.shape) != (trials, *x.shape):
                raise ShapeError(f"targets must have shape {(trials, *x.shape)}, got {tuple(targets.shape)}")
            targets = targets.to(device)
        if self.needs_classifier and classifier is None:
            raise AerobustError(f"attack '{self.name}' needs a classifier head on the latent codes (classifier=)")
        if labels is not None:
            labels = torch.as_tensor(labels).long().to(device)
            if labels.shape != (n_images,):
                raise ShapeError(f"labels must have shape ({n_images},), got {tuple(labels.shape)}")

        target_classes = None
        if getattr(self.objective, "targeted", False):
            target_classes = _target_classes(model, classifier, labels, trials, seed, image_ids).to(device)

        shape = (len(lambdas), trials, self.restarts, n_images)
        grid = torch.stack(torch.meshgrid(*(torch.arange(s) for s in shape), indexing="ij")).flatten(1)
        lam_idx, trial_idx, restart_idx, img_idx = grid
        ids = image_ids[img_idx]
        radii = [absolute_radius(self.budget, lam, x.shape[1:]) for lam in lambdas]
        radius = torch.tensor(radii, dtype=x.dtype)[lam_idx]
        seeds = _seeds(seed, "start", trial_idx.tolist(), ids.tolist(), restart_idx.tolist())
        total = grid.shape[1]

        last_bound: list[tuple[torch.Tensor, AttackProblem]] = []

        def bind(rows: torch.Tensor) -> AttackProblem:
            # The final evaluation (and the clean one, with one lambda and one restart) usually asks
            # again for the rows just attacked: reuse their references instead of recomputing them.
            if last_bound and torch.equal(last_bound[0][0], rows):
                return last_bound[0][1]
            problem = _bind(rows)
            last_bound[:] = [(rows, problem)]
            return problem

        def _bind(rows: torch.Tensor) -> AttackProblem:
            n, t = img_idx[rows].to(device), trial_idx[rows].to(device)
            row_targets = None if targets is None else targets[t, n]
            row_labels = None if labels is None else labels[n]
            row_classes = None if target_classes is None else target_classes[t, n]
            objective = self.objective.bind(model, x[n], targets=row_targets, labels=row_labels,
                                            classifier=classifier, target_classes=row_classes)
            if self.compile is not None:
                if objective.evaluate not in self._compiled:
                    self._compiled[objective.evaluate] = _CompiledOrEager(objective.evaluate, self.compile)
                objective = dataclasses.replace(objective, evaluate=self._compiled[objective.evaluate])
            return AttackProblem(x[n], Threat(radius[rows].to(device), self.norm), objective, seeds[rows],
                                 model, classifier, row_labels, row_targets, row_classes)

        with frozen_modules(*(m for m in (model, classifier) if m is not None)):
            x_adv = x[img_idx.to(device)].clone()
            values = torch.empty(total, device=device)
            histories = []
            zero_grad = torch.zeros(total, dtype=torch.bool)
            nan_grad = torch.zeros(total, dtype=torch.bool)
            attacked = torch.nonzero(radius > 0).flatten()

            def attack_chunk(chunk: torch.Tensor):
                problem = bind(chunk)
                result = self.optimize(problem)
                problem.threat.check(problem.x, result.x_adv)
                x_adv[chunk.to(device)] = result.x_adv.detach()
                if result.history is not None:
                    histories.append((chunk, result.history.detach()))
                if result.zero_gradient is not None:
                    zero_grad[chunk] = result.zero_gradient.cpu()
                if result.nan_gradient is not None:
                    nan_grad[chunk] = result.nan_gradient.cpu()

            def evaluate_chunk(chunk: torch.Tensor):
                values[chunk.to(device)] = bind(chunk).values(x_adv[chunk.to(device)])

            chunk_size = self._chunk_size(model, _bind, attacked if len(attacked) else torch.arange(total), x)
            chunk_size, halvings = run_in_chunks(attacked, chunk_size, attack_chunk, device)
            with torch.no_grad():
                chunk_size, more = run_in_chunks(torch.arange(total), chunk_size, evaluate_chunk, device)
            halvings += more
            history = None
            if histories or len(attacked) == 0:
                # Optimizers may record different lengths (L-BFGS-B); shorter rows end in NaN.
                length = max((h.shape[1] for _, h in histories), default=1)
                history = torch.full((total, length), float("nan"), device=device)
                for chunk, h in histories:
                    history[chunk.to(device), : h.shape[1]] = h.to(device)
                # A lambda = 0 sample never moves: its history is its clean value at every step.
                still = (radius == 0).to(device)
                history[still] = values[still][:, None]

            values = values.view(shape)
            pick = (values.argmax if self.objective.maximize else values.argmin)(dim=2)  # (L, T, N)

            def worst_case(tensor: torch.Tensor) -> torch.Tensor:
                tensor = tensor.view(*shape, *tensor.shape[1:])
                index = pick.view(*pick.shape[:2], 1, pick.shape[2], *([1] * (tensor.dim() - 4)))
                index = index.expand(*pick.shape[:2], 1, *tensor.shape[3:])
                return tensor.gather(2, index).squeeze(2)

            adv = worst_case(x_adv)
            loss = worst_case(values.flatten())
            hist = None if history is None else worst_case(history)
            grid_x = x[None, None]
            norms = (adv - grid_x).flatten(3).norm(dim=3)
            with torch.no_grad():
                clean_rows = torch.nonzero((lam_idx == 0) & (restart_idx == 0)).flatten()
                clean = torch.empty(len(clean_rows), device=device)

                def evaluate_clean(chunk: torch.Tensor):
                    clean[torch.searchsorted(clean_rows, chunk).to(device)] = bind(chunk).values(
                        x[img_idx[chunk].to(device)])

                chunk_size, more = run_in_chunks(clean_rows, chunk_size, evaluate_clean, device)
                halvings += more
                clean = clean.view(trials, n_images)

            flags = []
            if self.sanity_checks:
                flags = sanity_flags(self, model, bind=bind, lambdas=radii, shape=shape, adv=adv,
                                     loss=loss, clean=clean, seed=seed, image_ids=image_ids,
                                     zero_gradient=zero_grad.view(shape), nan_gradient=nan_grad.view(shape))

        fallbacks = [c.failure for c in self._compiled.values() if c.failure is not None]
        config = {**self.config(), "chunk_size": chunk_size, "chunk_halvings": halvings,
                  "compile_fallback": fallbacks[0] if fallbacks else None,
                  "lambdas": lambdas, "radii": radii, "trials": trials, "seed": int(seed),
                  "image_ids": image_ids.tolist(), "device": str(device),
                  "attack_loss": ("latent distance ||g(x+d) - g(x_t)||_2, lower = stronger"
                                  if self.objective.name == "latent" else
                                  f"{self.objective.name} objective, "
                                  f"{'higher' if self.objective.maximize else 'lower'} = stronger"),
                  "history": "objective value at each iterate" if hist is not None else None,
                  "delta_norm": "l2"}
        to_out = lambda t: None if t is None else t.detach().to(out_device)  # noqa: E731
        return SweepResult(
            x_adv=to_out(adv), attack_loss=to_out(loss), delta_norm=to_out(norms), history=to_out(hist),
            lambdas=lambdas, radii=radii, trials=trials, flags=flags, config=config, clean_loss=to_out(clean),
            restart=to_out(pick), target_classes=to_out(target_classes),
        )


class _CompiledOrEager:
    """``torch.compile(function)``, or ``function`` itself once compiling or a compiled call failed."""

    def __init__(self, function: Callable, backend: str):
        self.function = function
        self.compiled = torch.compile(function, backend=backend)
        self.failure: str | None = None

    def __call__(self, *args):
        if self.failure is None:
            try:
                return self.compiled(*args)
            except AerobustError:
                raise  # the model's own error, not the compiler's
            except Exception as error:
                self.failure = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
        return self.function(*args)


def _check_lambdas(lambdas) -> list[float]:
    values = [float(lambdas)] if isinstance(lambdas, (int, float)) else [float(v) for v in lambdas]
    if not values:
        raise AerobustError("give at least one lambda (attack radius)")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise AerobustError(f"every lambda must be a finite number >= 0, got {values}")
    return values


def _check_images(x: torch.Tensor, model) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ShapeError("images must be a tensor of shape (N, C, H, W)")
    shape = getattr(model, "input_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ShapeError(f"images of shape {tuple(x.shape[1:])} do not fit the model input {tuple(shape)}; "
                         "resize or pad the data")
    if not bool(torch.isfinite(x).all()):
        raise AerobustError("the images contain NaN or infinite pixels; clean the data first")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise AerobustError("pixels must lie in [0, 1] (the threat's box); rescale the images")
    return x if x.is_floating_point() else x.float()


def _check_ids(image_ids, n: int) -> torch.Tensor:
    if image_ids is None:
        return torch.arange(n)
    ids = torch.as_tensor(image_ids).long().cpu()
    if ids.shape != (n,):
        raise ShapeError(f"image_ids must have shape ({n},), got {tuple(ids.shape)}")
    return ids


def _target_classes(model, classifier, labels, trials, seed, image_ids) -> torch.Tensor:
    """A reproducible other class per (trial, image) for the targeted classifier attack."""
    if labels is None:
        raise AerobustError("the targeted latent-classifier attack needs labels (to pick another class)")
    with torch.no_grad():
        num_classes = classifier(torch.zeros(1, model.latent_dim, device=labels.device)).shape[1]
    if num_classes < 2:
        raise AerobustError("the classifier must have at least two classes for a targeted attack")
    classes = torch.empty(trials, len(labels), dtype=torch.long)
    for t in range(trials):
        for n, (label, image_id) in enumerate(zip(labels.tolist(), image_ids.tolist())):
            generator = torch.Generator().manual_seed(derive_seed(seed, "class", t, image_id))
            shift = 1 + int(torch.randint(num_classes - 1, (1,), generator=generator))
            classes[t, n] = (label + shift) % num_classes
    return classes


def choose_targets(labels: torch.Tensor | None, trials: int, seed: int,
                   pool_labels: torch.Tensor | None = None, *, image_ids: torch.Tensor | None = None,
                   pool_size: int | None = None) -> torch.Tensor:
    """Indices ``(trials, N)`` into a pool of target images, one per (trial, image), reproducibly.

    With labels, each target has another class than its image; the pool is the attacked images
    themselves unless ``pool_labels`` (or, without labels, ``pool_size``) describes another pool.
    Without labels the target is a random other image. Each choice depends only on
    ``(seed, trial, image_id)``.
    """
    if labels is None and image_ids is None:
        raise AerobustError("choose_targets needs labels or image_ids to know the number of images")
    n_images = len(labels) if labels is not None else len(image_ids)
    ids = _check_ids(image_ids, n_images).tolist()
    same_pool = pool_labels is None and pool_size is None
    if labels is not None:
        labels = torch.as_tensor(labels).long().cpu()
        pool = labels if pool_labels is None else torch.as_tensor(pool_labels).long().cpu()
        candidates = {int(c): torch.nonzero(pool != c).flatten() for c in labels.unique()}
        missing = [c for c, idx in candidates.items() if len(idx) == 0]
        if missing:
            raise AerobustError(f"the target pool has no image of a class other than {missing}; use a larger pool")
    else:
        size = n_images if same_pool else (len(pool_labels) if pool_labels is not None else int(pool_size))
        if size < (2 if same_pool else 1):
            raise AerobustError("the target pool needs at least one image other than the attacked one")
    chosen = torch.empty(int(trials), n_images, dtype=torch.long)
    for t in range(int(trials)):
        for n in range(n_images):
            generator = torch.Generator().manual_seed(derive_seed(seed, "target", t, ids[n]))
            if labels is not None:
                options = candidates[int(labels[n])]
                chosen[t, n] = options[int(torch.randint(len(options), (1,), generator=generator))]
            elif same_pool:
                pick = int(torch.randint(size - 1, (1,), generator=generator))
                chosen[t, n] = pick + (pick >= n)
            else:
                chosen[t, n] = int(torch.randint(size, (1,), generator=generator))
    return chosen
