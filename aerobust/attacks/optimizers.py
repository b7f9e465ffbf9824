"""Built-in optimizers: batched PGD, PGD whose step halves per sample on a stall ("pgd-halving"), adaptive
PGD (APGD), FGSM, and the reference protocol's per-image L-BFGS-B (the projected quasi-Newton optimizer,
"pqn", is in :mod:`aerobust.attacks.quasi_newton`).

Each is registered in ``OPTIMIZERS`` (``aerobust list optimizers``) with the settings class it reads
(:func:`optimizer_with_settings`), and called as ``optimizer(settings, problem)``: ``settings`` is an
instance of that class (steps, step size, schedule, ...), ``problem`` the flat batch and its threat;
it returns an :class:`OptimizationResult`. A plugin adds one the same way, and an attack picks it
with ``optimizer="name"``. :func:`projected_step` is the one projected step every gradient loop
of the package takes (PGD, the universal attack, the smooth encoders' selection through PGD).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .. import threat
from ..registry import register_optimizer
from ..threat import Threat, Workspace
from .problem import AttackProblem, OptimizationResult, input_gradient
from .settings import (OptimizerSettings, finite_number, flag, one_of, optional_whole_number, setting,
                       whole_number)

SCHEDULES = {
    "constant": lambda k, n: 1.0,
    "cosine": lambda k, n: 0.5 * (1 + math.cos(math.pi * k / n)),
    "linear": lambda k, n: 1 - k / n,
    "step": lambda k, n: 0.5 ** ((k >= n // 2) + (k >= 3 * n // 4)),
}


@dataclasses.dataclass(frozen=True)
class ScheduledSteps(OptimizerSettings):
    """``steps`` steps whose length, a fraction ``step_size`` of the radius, decays on ``schedule``."""

    steps: int = setting(100, whole_number(1))
    step_size: float = setting(0.25, finite_number(0, inclusive=False, meaning=" (a fraction of lambda)"))
    schedule: str = setting("cosine", one_of(SCHEDULES))

    def step_length(self, step: int, radius: torch.Tensor) -> torch.Tensor:
        return (self.step_size * SCHEDULES[self.schedule](step, self.steps)) * radius


@dataclasses.dataclass(frozen=True)
class PGDSettings(ScheduledSteps):
    """PGD's: scheduled steps, a random start in the ball (else at x), early stopping (:class:`EarlyStop`)."""

    random_start: bool = setting(True, flag)
    early_stop: int | None = setting(None, optional_whole_number(1))
    early_stop_rtol: float = setting(0.0, finite_number(0, inclusive=True))


@dataclasses.dataclass(frozen=True)
class HalvingSettings(OptimizerSettings):
    """pgd-halving's: a step cap, the first step, when a sample has stalled, how often its step halves."""

    steps: int = setting(100, whole_number(1))
    step_size: float = setting(0.25, finite_number(0, inclusive=False, meaning=" (a fraction of lambda)"))
    patience: int = setting(4, whole_number(1))
    rtol: float = setting(1e-4, finite_number(0, inclusive=True))
    halvings: int = setting(3, whole_number(0))
    random_start: bool = setting(True, flag)


@dataclasses.dataclass(frozen=True)
class APGDSettings(OptimizerSettings):
    """APGD's: its step sizes adapt, so only the number of steps and the start are chosen."""

    steps: int = setting(100, whole_number(1))
    random_start: bool = setting(True, flag)


@dataclasses.dataclass(frozen=True)
class FGSMSettings(OptimizerSettings):
    """FGSM's: one full-radius step from a random start or from x."""

    random_start: bool = setting(True, flag)


@dataclasses.dataclass(frozen=True)
class LegacyLBFGSSettings(OptimizerSettings):
    """The reference protocol's scipy L-BFGS-B: memory, factr, pgtol and the iteration cap."""

    norms = ("l2",)  # its hard norm bound rescales radially: defined for the L2 ball only

    lbfgs_memory: int = setting(25, whole_number(1))
    lbfgs_factr: float = setting(10.0, finite_number(0, inclusive=True))
    lbfgs_pgtol: float = setting(1e-5, finite_number(0, inclusive=True))
    lbfgs_maxiter: int = setting(15000, whole_number(1))


def optimizer_with_settings(name: str, settings_class: type[OptimizerSettings]):
    """Register ``function(settings, problem)`` as optimizer ``name``, reading a ``settings_class`` instance."""
    def add(function):
        function.settings_class = settings_class
        return register_optimizer(name, function)

    return add


def settings_class_of(optimizer) -> type[OptimizerSettings]:
    """The settings class an optimizer declared; one registered without any takes no settings."""
    return getattr(optimizer, "settings_class", OptimizerSettings)


@dataclasses.dataclass(frozen=True)
class EarlyStop:
    """Per-sample early stopping on the best minimized loss so far.

    A sample is finished once its best loss has fallen by less than ``rtol`` times its size at the
    last such fall (the anchor) for ``patience`` steps in a row; ``rtol = 0`` counts any fall.
    """

    patience: int
    rtol: float

    def update(self, best_loss: torch.Tensor, anchor: torch.Tensor,
               stale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The new anchor and stale-step count of each sample, and the mask of samples to keep."""
        # An infinite anchor (no finite loss yet) is beaten by any finite loss.
        threshold = torch.where(torch.isfinite(anchor), anchor - self.rtol * anchor.abs(), anchor)
        gained = best_loss < threshold
        stale = torch.where(gained, torch.zeros_like(stale), stale + 1)
        return torch.where(gained, best_loss, anchor), stale, stale < self.patience


def early_stopping(settings) -> EarlyStop | None:
    """The :class:`EarlyStop` of settings with ``early_stop`` (a patience or None) and ``early_stop_rtol``."""
    return None if settings.early_stop is None else EarlyStop(settings.early_stop, settings.early_stop_rtol)


def step_direction(grad: torch.Tensor, norm: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit steepest-descent direction in the threat's norm, the gradient's L2 size, bad rows.

    Rows with NaN/inf entries (their L2 size is not finite) get direction 0 and are reported. On
    CPU the repair runs only when needed; on an accelerator it always runs, because asking whether
    it is needed would stop the device queue every step.
    """
    size = grad.flatten(1).norm(dim=1)
    bad = ~torch.isfinite(size)
    if threat.sync_free(grad.device):
        grad = torch.nan_to_num_(grad, nan=0.0, posinf=0.0, neginf=0.0)
        size = torch.where(bad, grad.flatten(1).norm(dim=1), size)
    elif bool(bad.any()):
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        size = grad.flatten(1).norm(dim=1)
    if norm == "linf":
        return grad.sign_(), size, bad
    scale = size.clamp_min(torch.finfo(grad.dtype).tiny).reciprocal()
    return grad.mul_(scale.view(-1, *([1] * (grad.dim() - 1)))), size, bad


def projected_step(ball: Threat, center: torch.Tensor, delta: torch.Tensor, grad: torch.Tensor,
                   length: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor], *,
                   out: torch.Tensor | None = None,
                   workspace: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One descent step on a minimized loss: ``delta`` moved ``length`` (one per row) against ``grad``
    in the ball's norm (:func:`step_direction`), then projected onto the ball around ``center``
    within ``bounds``. Overwrites ``grad``; ``out`` and ``workspace`` as for :meth:`Threat.project`.

    Returns the projected perturbation, the gradient's L2 size and the rows whose gradient was not finite.
    """
    direction, size, bad = step_direction(grad, ball.norm)
    shape = (-1, *([1] * (delta.dim() - 1)))
    moved = torch.addcmul(delta, direction, length.view(shape), value=-1,
                          out=None if workspace is None else workspace.get("moved", delta))
    return ball.project(center, moved, bounds, out=out, workspace=workspace), size, bad


@optimizer_with_settings("pgd", PGDSettings)
def pgd(settings: PGDSettings, problem: AttackProblem) -> OptimizationResult:
    """Projected normalized-gradient descent on the minimized loss, keeping the best iterate per sample.

    On CUDA a step queues its work without waiting for the device (sorted projection, where() for
    the best iterate); early stopping, which retires rows, is the exception.
    """
    x, objective, batch = problem.x, problem.objective, len(problem)
    shape = (-1, *([1] * (x.dim() - 1)))
    # contiguous: the projection writes each step's result into it in place
    delta = problem.random_start() if settings.random_start else torch.zeros_like(x, memory_format=torch.contiguous_format)
    radius = problem.threat.radii(x)
    history = torch.full((batch, settings.steps), float("nan"), device=x.device)
    best_values = torch.full((batch,), -math.inf if objective.maximize else math.inf, device=x.device)
    best_delta = delta.clone()
    zero_gradient = torch.zeros(batch, dtype=torch.bool, device=x.device)
    nan_gradient = torch.zeros(batch, dtype=torch.bool, device=x.device)
    stale = torch.zeros(batch, dtype=torch.long, device=x.device)
    anchor = torch.full((batch,), math.inf, device=x.device)  # early stopping's, on the minimized loss
    early_stop = early_stopping(settings)
    sign = -1.0 if objective.maximize else 1.0  # the minimized loss is sign * value
    rows = torch.arange(batch, device=x.device)
    active = problem  # shrinks only when early stopping retires samples
    bounds = (-x, 1 - x)
    workspace = Workspace()  # the step's (B, D) temporaries, reused across steps

    def keep_best(values: torch.Tensor, candidate: torch.Tensor) -> None:
        if len(rows) == batch:
            improved = objective.stronger(values, best_values)
            torch.where(improved, values, best_values, out=best_values)
            if threat.sync_free(x.device):
                # No data-dependent sizes on an accelerator: they would sync with the host every step.
                torch.where(improved.view(shape), candidate, best_delta, out=best_delta)
                return
            # CPU: copy only the improved rows (all of them at first, few later): cheaper than a
            # where() over the whole perturbation.
            index = improved.nonzero().flatten()
            if len(index) == batch:
                best_delta.copy_(candidate)
            elif len(index):
                best_delta.index_copy_(0, index, candidate.index_select(0, index))
        else:
            improved = objective.stronger(values, best_values[rows])
            best_values[rows] = torch.where(improved, values, best_values[rows])
            best_delta[rows[improved]] = candidate[improved]

    for step in range(settings.steps):
        full = len(rows) == batch
        current = delta if full else delta[rows]
        values, grad = active.loss_and_grad(current)
        keep_best(values, current)  # before the step: on a full batch it overwrites current in place
        length = settings.step_length(step, radius if full else radius[rows])
        if full:
            _, size, bad = projected_step(active.threat, active.x, current, grad, length, bounds, out=delta,
                                          workspace=workspace)
        else:
            delta[rows], size, bad = projected_step(active.threat, active.x, current, grad, length,
                                                    (bounds[0][rows], bounds[1][rows]),
                                                    out=workspace.get("projected", current), workspace=workspace)
        if step == 0:
            zero_gradient[rows] = size == 0
        if full:
            nan_gradient |= bad
            history[:, step] = values
        else:
            nan_gradient[rows] |= bad
            history[rows, step] = values
        if early_stop is not None:
            anchor[rows], stale[rows], keep = early_stop.update(sign * best_values[rows], anchor[rows], stale[rows])
            if not bool(keep.all()):
                rows = rows[keep]
                if len(rows) == 0:
                    break
                active = active.select(keep.nonzero().flatten().cpu())
    if len(rows):
        current = delta if len(rows) == batch else delta[rows]
        with torch.no_grad():
            keep_best(active.values(active.x + current), current)
    return OptimizationResult(problem.threat.apply(x, best_delta, workspace=workspace), history, zero_gradient,
                              nan_gradient)


@optimizer_with_settings("pgd-halving", HalvingSettings)
def pgd_halving(settings: HalvingSettings, problem: AttackProblem) -> OptimizationResult:
    """PGD whose step size halves per sample when its progress stalls; a sample leaves once it has halved enough.

    Every sample starts with steps of ``step_size`` times its radius (normalized gradient for L2,
    signed for L-inf, projected exactly onto the threat). When its best loss has not gained
    ``rtol`` of itself for ``patience`` steps in a row (:class:`EarlyStop`'s rule), it goes back to
    its best point, halves its step and steps from there along the gradient it had there; after
    ``halvings`` halvings its next stall ends it, and the batch is compacted so that it costs
    nothing more. ``steps`` caps the steps of any sample. So a sample pays for the steps it still
    gains from: where the loss is flat quickly (most samples of a converged attack), 20-40 steps.
    In the spirit of APGD (Croce & Hein 2020: the step halves on a stall and restarts from the
    best point) with per-sample stall tests instead of fixed checkpoints, and without momentum.
    Each sample's path depends on that sample only, so results do not depend on chunking. Asking
    whether a sample has finished waits for the device once per step (as early stopping does).
    """
    x, objective, batch = problem.x, problem.objective, len(problem)
    shape = (-1, *([1] * (x.dim() - 1)))
    delta = problem.random_start() if settings.random_start else torch.zeros_like(x)
    radius = problem.threat.radii(x)
    step_fraction = torch.full((batch,), settings.step_size, device=x.device)
    halved = torch.zeros(batch, dtype=torch.long, device=x.device)
    history = torch.full((batch, settings.steps), float("nan"), device=x.device)
    best_values = torch.full((batch,), -math.inf if objective.maximize else math.inf, device=x.device)
    best_delta, best_grad = delta.clone(), torch.zeros_like(x)
    zero_gradient = torch.zeros(batch, dtype=torch.bool, device=x.device)
    nan_gradient = torch.zeros(batch, dtype=torch.bool, device=x.device)
    stall = EarlyStop(settings.patience, settings.rtol)
    stale = torch.zeros(batch, dtype=torch.long, device=x.device)
    anchor = torch.full((batch,), math.inf, device=x.device)
    sign = -1.0 if objective.maximize else 1.0  # the minimized loss is sign * value
    rows = torch.arange(batch, device=x.device)
    active = problem  # shrinks as samples finish
    bounds = (-x, 1 - x)

    for step in range(settings.steps):
        current = delta[rows]
        values, grad = active.loss_and_grad(current)
        improved = objective.stronger(values, best_values[rows])
        best = torch.where(improved, values, best_values[rows])
        best_values[rows] = best
        best_delta[rows[improved]] = current[improved]
        best_grad[rows[improved]] = grad[improved]
        history[rows, step] = values
        anchor[rows], stale[rows], moving = stall.update(sign * best, anchor[rows], stale[rows])
        stalled = ~moving
        step_fraction[rows] = torch.where(stalled, step_fraction[rows] / 2, step_fraction[rows])
        halved[rows] += stalled.long()
        stale[rows] = torch.where(stalled, torch.zeros_like(stale[rows]), stale[rows])
        # a stalled sample steps from its best point, along the gradient it had there
        start = torch.where(stalled.view(shape), best_delta[rows], current)
        grad = torch.where(stalled.view(shape), best_grad[rows], grad)
        delta[rows], size, bad = projected_step(active.threat, active.x, start, grad,
                                                step_fraction[rows] * radius[rows], (bounds[0][rows], bounds[1][rows]))
        if step == 0:
            zero_gradient = size == 0
        nan_gradient[rows] |= bad
        finished = halved[rows] > settings.halvings
        if bool(finished.any()):
            keep = ~finished
            rows = rows[keep]
            if len(rows) == 0:
                break
            active = active.select(keep.nonzero().flatten().cpu())
    if len(rows):
        current = delta[rows]
        with torch.no_grad():
            values = active.values(active.x + current)
        improved = objective.stronger(values, best_values[rows])
        best_delta[rows[improved]] = current[improved]
    return OptimizationResult(problem.threat.apply(x, best_delta), history, zero_gradient, nan_gradient)


# APGD's constants (Croce & Hein 2020, "Reliable evaluation of adversarial robustness ..."): the
# first step is twice the radius, the momentum weight 0.75, and at a checkpoint the step halves
# unless at least 75% of the steps since the previous checkpoint improved on their predecessor.
APGD_FIRST_STEP = 2.0
APGD_MOMENTUM = 0.75
APGD_SUCCESS_SHARE = 0.75


def apgd_checkpoints(steps: int) -> list[int]:
    """The steps at which APGD may halve its step size: fractions 0.22, then growing gaps (>= 0.06)."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    # rounded first: 0.22 * 100 is 22.000000000000004 in floating point, not past step 22
    steps_at = (math.ceil(round(f * steps, 9)) for f in fractions[1:])
    return sorted({step for step in steps_at if step < steps})


@optimizer_with_settings("apgd", APGDSettings)
def apgd(settings: APGDSettings, problem: AttackProblem) -> OptimizationResult:
    """Adaptive PGD: momentum steps whose size halves, per sample, when progress stalls.

    At each checkpoint (:func:`apgd_checkpoints`) a sample halves its step size and restarts from
    its best point when fewer than ``APGD_SUCCESS_SHARE`` of the steps since the last checkpoint
    improved on their predecessor, or when its step was not halved at the last checkpoint and its
    best value has not moved since. Steps are normalized (L2) or signed (L-inf) gradients scaled
    by the sample's radius, projected exactly onto the threat (L2 ball ∩ box, or L-inf box).
    One forward+backward per step plus one forward for the last iterate, as PGD.
    """
    x, objective, batch = problem.x, problem.objective, len(problem)
    shape = (-1, *([1] * (x.dim() - 1)))
    bounds = (-x, 1 - x)
    radius = problem.threat.radii(x)
    delta = problem.random_start() if settings.random_start else torch.zeros_like(x)
    previous = delta.clone()
    eta = torch.full((batch,), APGD_FIRST_STEP, device=x.device)
    history = torch.full((batch, settings.steps), float("nan"), device=x.device)
    best_values = torch.full((batch,), -math.inf if objective.maximize else math.inf, device=x.device)
    best_delta, best_grad = delta.clone(), torch.zeros_like(x)
    nan_gradient = torch.zeros(batch, dtype=torch.bool, device=x.device)
    successes = torch.zeros(batch, device=x.device)
    reduced_last = torch.zeros(batch, dtype=torch.bool, device=x.device)
    best_at_checkpoint = best_values.clone()
    checkpoints, last_checkpoint = apgd_checkpoints(settings.steps), 0
    values_before = None

    for step in range(settings.steps):
        values, grad = problem.loss_and_grad(delta)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        if step == 0:
            zero_gradient = grad.flatten(1).norm(dim=1) == 0
        history[:, step] = values
        if values_before is not None:
            successes += objective.stronger(values, values_before).float()
        values_before = values
        improved = objective.stronger(values, best_values)
        best_values = torch.where(improved, values, best_values)
        best_delta = torch.where(improved.view(shape), delta, best_delta)
        best_grad = torch.where(improved.view(shape), grad, best_grad)
        if step in checkpoints:
            stalled = successes < APGD_SUCCESS_SHARE * (step - last_checkpoint)
            unmoved = ~reduced_last & (best_values == best_at_checkpoint)
            reduce = stalled | unmoved
            eta = torch.where(reduce, eta / 2, eta)
            # restart from the best point, without momentum
            delta = torch.where(reduce.view(shape), best_delta, delta)
            grad = torch.where(reduce.view(shape), best_grad, grad)
            previous = torch.where(reduce.view(shape), delta, previous)
            reduced_last, best_at_checkpoint = reduce, best_values.clone()
            successes.zero_()
            last_checkpoint = step
        direction, _, bad = step_direction(grad, problem.threat.norm)
        nan_gradient |= bad
        length = (eta * radius).view(shape)
        target = problem.threat.project(x, delta - direction * length, bounds)
        if step == 0:
            moved = target
        else:
            moved = problem.threat.project(
                x, delta + APGD_MOMENTUM * (target - delta) + (1 - APGD_MOMENTUM) * (delta - previous), bounds)
        previous, delta = delta, moved
    with torch.no_grad():
        values = problem.values(x + delta)
    improved = objective.stronger(values, best_values)
    best_delta = torch.where(improved.view(shape), delta, best_delta)
    return OptimizationResult(problem.threat.apply(x, best_delta), history, zero_gradient, nan_gradient)


@optimizer_with_settings("fgsm", FGSMSettings)
def fgsm(settings: FGSMSettings, problem: AttackProblem) -> OptimizationResult:
    """One step of the full radius along the normalized (L2) or signed (L-inf) gradient."""
    x = problem.x
    start = problem.random_start() if settings.random_start else torch.zeros_like(x)
    values, grad = problem.loss_and_grad(start)
    direction, size, bad = step_direction(grad, problem.threat.norm)
    radius = problem.threat.radii(x).view(-1, *([1] * (x.dim() - 1)))
    x_adv = problem.threat.apply(x, start - direction * radius)
    with torch.no_grad():
        history = torch.stack([values, problem.values(x_adv)], dim=1)
    return OptimizationResult(x_adv, history, size == 0, bad)


@optimizer_with_settings("lbfgs-legacy", LegacyLBFGSSettings)
def lbfgs_legacy(settings: LegacyLBFGSSettings, problem: AttackProblem) -> OptimizationResult:
    """The reference protocol, one image at a time (numpy/scipy at this edge only).

    scipy's L-BFGS-B with box bounds ``[-x, 1 - x]`` on the noise, memory ``lbfgs_memory``,
    ``factr = lbfgs_factr``; the start is drawn in the d-ball (uniform direction, radius
    ``U^(1/D)`` times a uniform scale in ``(1e-8, lambda)``); the norm bound is hard: the objective
    sees the noise radially shrunk onto the ball whenever it is longer than lambda, and so does
    the returned point.
    """
    from scipy.optimize import fmin_l_bfgs_b

    x, objective = problem.x, problem.objective
    radius = problem.threat.radii(x)
    adversarial, histories = [], []
    for i in range(len(problem)):
        single = problem.select(torch.tensor([i]))
        image, lam = single.x, float(radius[i])
        flat = image.detach().flatten().double().cpu().numpy()
        dims = flat.size
        generator = torch.Generator().manual_seed(int(problem.seeds[i]))
        direction = torch.randn(dims, generator=generator, dtype=torch.float64)
        shell, scale = torch.rand(2, generator=generator, dtype=torch.float64)
        start = direction / direction.norm() * shell ** (1.0 / dims) * (1e-8 + scale * (lam - 1e-8))
        evaluations = []

        def loss_and_grad(noise: np.ndarray):
            noise_t = torch.from_numpy(noise).to(image.dtype).to(image.device).view_as(image)
            with torch.enable_grad():
                noise_t.requires_grad_(True)
                length = noise_t.norm()
                bounded = noise_t * (lam / length) if float(length.detach()) > lam else noise_t
                value = single.values(image + bounded)
                loss = -value if objective.maximize else value
                grad = input_gradient(loss, noise_t)
            evaluations.append(float(value.detach()))
            return float(loss.detach()), grad.detach().flatten().double().cpu().numpy()

        noise, _, _ = fmin_l_bfgs_b(loss_and_grad, start.numpy(), bounds=list(zip(-flat, 1.0 - flat)),
                                    m=settings.lbfgs_memory, factr=settings.lbfgs_factr,
                                    pgtol=settings.lbfgs_pgtol, maxiter=settings.lbfgs_maxiter)
        noise_t = torch.from_numpy(noise).to(image.dtype).to(image.device).view_as(image)
        length = float(noise_t.norm())
        if length > lam:
            noise_t = noise_t * (lam / length)
        adversarial.append((image + noise_t).clamp(0.0, 1.0))
        histories.append(torch.tensor(evaluations))
    longest = max(len(h) for h in histories)
    history = torch.full((len(problem), longest), float("nan"))
    for i, h in enumerate(histories):
        history[i, : len(h)] = h
    return OptimizationResult(torch.cat(adversarial), history.to(x.device))


# The reference code's maximum-damage settings (L-BFGS-B memory 100, pgtol 1e-20; budget enforced by
# radial rescaling, which lbfgs_legacy does): attack options, e.g. ATTACKS.create("max-damage", **preset).
REFERENCE_CODE_LBFGS = {"optimizer": "lbfgs-legacy", "lbfgs_memory": 100, "lbfgs_pgtol": 1e-20}
