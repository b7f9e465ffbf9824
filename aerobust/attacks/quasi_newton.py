"""Projected quasi-Newton: batched L-BFGS directions, projected onto the threat and backtracked per sample.

Each iteration evaluates one trial point per sample (one forward+backward): the current iterate
moved ``alpha`` along the L-BFGS direction (two-loop recursion over the sample's last
``lbfgs_memory`` pairs) and projected exactly onto the threat (:meth:`Threat.project`). Three things
make the direction fit the constraints (:func:`lbfgs_direction`): coordinates held at a face of the
box are left out of it, on the sphere of the L2 ball it is the Lagrangian's (with the ball's KKT
multiplier estimate, :func:`sphere_multiplier`) and tangent to the sphere, and a minimized distance
(the latent attack's) is minimized squared (:func:`minimized_loss`). A trial that decreases the
loss by Armijo's rule becomes the iterate, its pair (step, gradient change) enters the memory when it
passes the curvature test ``s·y > 0``, and the next trial takes the full step ``alpha = 1``. A
rejected trial shrinks ``alpha`` (the minimizer of the quadratic through the two values and the
slope, kept within [0.1, 0.5] of the last ``alpha``), and when the projected step was not even a
descent direction the sample forgets its pairs, so its next trial is a projected gradient step
(PGD's, of ``alpha * first_step * lambda``). The best evaluated point of each sample is returned.
Every sample moves on its own: acceptance, memory and ``alpha`` are masks and ``torch.where``, so a
step never waits for the device (early stopping, which compacts the batch, is the exception).

Against PGD's fixed step schedule this spends the evaluations where the loss is smooth, as on the
latent attack (a distance to a target code, minimized): PGD of hundreds of steps is not converged
there (reports/attack-strength), this reaches further in 48 iterations.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from .optimizers import early_stopping, optimizer_with_settings, step_direction
from .problem import AttackProblem, OptimizationResult
from .settings import (OptimizerSettings, finite_number, flag, optional_whole_number, setting,
                       whole_number)
from ..threat import Workspace, sync_free

# Armijo's sufficient-decrease constant, and the shrink of a rejected step (Nocedal & Wright, ch. 3).
ARMIJO = 1e-4
SHRINK_MIN, SHRINK_MAX = 0.1, 0.5
# A pair enters the memory only when s·y exceeds this share of |s| |y|: a pair of (near) zero or
# negative curvature would make the inverse Hessian estimate indefinite.
CURVATURE_RTOL = 1e-8
# A perturbation this close to the L2 radius (relative) is on the ball's sphere (the projection's float32
# rounding is far smaller); on the latent attack at lambda 3 (an earlier version of this optimizer) 1e-3
# gave a 5th-percentile strength as good as 1e-4 or better, 1e-2 a worse one.
ON_SPHERE_RTOL = 1e-3
# Rows per block of the CPU's L-BFGS recursion: the pair memory of 128 rows of 1,024 pixels (8 pairs, 4 MiB per
# array) stays in a 32 MiB cache through the recursion; on 2,000 MNIST rows a direction took 0.07 s instead of
# 0.27 s, and blocks of 64 or 256 rows did as well.
CPU_ROW_BLOCK = 128


@dataclasses.dataclass(frozen=True)
class PQNSettings(OptimizerSettings):
    """Projected quasi-Newton's: iterations, memory, the first step, the start, early stopping.

    ``steps`` iterations cost ``steps + 1`` forward+backward evaluations (the start's included), as
    many model evaluations as PGD's ``steps`` steps and its final forward: the default, 48, is a
    quarter of PGD 100 x 2's evaluations. ``early_stop_rtol`` is relative to the loss this optimizer
    minimizes (for the latent attack, the squared distance).
    """

    steps: int = setting(48, whole_number(1))
    lbfgs_memory: int = setting(8, whole_number(1))
    first_step: float = setting(0.25, finite_number(0, inclusive=False, meaning=" (a fraction of lambda)"))
    random_start: bool = setting(True, flag)
    early_stop: int | None = setting(None, optional_whole_number(1))
    early_stop_rtol: float = setting(0.0, finite_number(0, inclusive=True))


def _rowwise_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vecdot(a, b, dim=1)


@dataclasses.dataclass
class _Rows:
    """The per-sample state of the samples still iterating, flat (B, D); compacted when samples retire."""

    rows: torch.Tensor          # (B,) their indices in the problem
    delta: torch.Tensor         # the current iterate
    loss: torch.Tensor          # (B,) minimized loss at it (NaN read as +inf: any finite trial beats it)
    grad: torch.Tensor          # its gradient
    steps_s: torch.Tensor       # (M, B, D) memory pairs, the newest last
    changes_y: torch.Tensor     # (M, B, D)
    stored: torch.Tensor        # (M, B) the filled slots
    alpha: torch.Tensor         # (B,) the share of the direction the next trial takes
    best_loss: torch.Tensor     # (B,) the best loss evaluated so far, and where
    best_delta: torch.Tensor
    anchor: torch.Tensor        # early stopping's reference loss and steps since it last moved
    stale: torch.Tensor

    def keep(self, mask: torch.Tensor) -> "_Rows":
        index = mask.nonzero().flatten()
        pick = lambda name, dim: getattr(self, name).index_select(dim, index)  # noqa: E731
        return _Rows(**{field.name: pick(field.name, 1 if field.name in ("steps_s", "changes_y", "stored") else 0)
                        for field in dataclasses.fields(self)})


def lbfgs_direction(grad: torch.Tensor, steps_s: torch.Tensor, changes_y: torch.Tensor, stored: torch.Tensor,
                    free: torch.Tensor, delta: torch.Tensor,
                    multiplier: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``-H g`` per row on its free coordinates by the two-loop recursion, and the rows that had a pair.

    ``steps_s``/``changes_y`` are (M, B, D) with the newest pair last, ``stored`` (M, B) marks the
    filled slots, ``free`` (B, D) is 1 on the coordinates the box leaves free to move along -g.
    The direction, the pairs and their curvature are restricted to the free coordinates (a pair whose
    restricted curvature fails the test is skipped), so coordinates held at a bound of the box do not
    bend the step of the others; the initial inverse Hessian is ``gamma I`` with the newest usable
    pair's ``s·y / y·y``.

    On the sphere of the ball (``multiplier`` > 0, the estimate of its KKT multiplier mu), the
    recursion runs on the Lagrangian ``loss + mu/2 ||delta||^2``: gradient ``g + mu delta`` (the
    component of g along the sphere) and gradient changes ``y + mu s``, and the step is kept tangent
    to the sphere; otherwise the step would chase the unconstrained minimum outside the ball and the
    projection would undo most of it.
    """
    steps_s, changes_y = steps_s * free, (changes_y + multiplier[:, None] * steps_s) * free
    curvature = torch.linalg.vecdot(steps_s, changes_y, dim=2)
    usable = stored & (curvature > CURVATURE_RTOL * steps_s.norm(dim=2) * changes_y.norm(dim=2))
    rho = torch.where(usable, 1 / torch.where(usable, curvature, torch.ones_like(curvature)),
                      torch.zeros_like(curvature))
    gamma = torch.zeros_like(grad[:, 0])
    for k in range(len(rho)):
        scale = curvature[k] / torch.linalg.vecdot(changes_y[k], changes_y[k], dim=1).clamp_min(1e-30)
        gamma = torch.where(usable[k], scale, gamma)
    q = (grad + multiplier[:, None] * delta) * free
    coefficients = []
    for k in reversed(range(len(rho))):
        a = rho[k] * _rowwise_dot(steps_s[k], q)
        q.addcmul_(changes_y[k], a[:, None], value=-1)
        coefficients.append(a)
    q.mul_(gamma[:, None])
    for k, a in zip(range(len(rho)), reversed(coefficients)):
        b = rho[k] * _rowwise_dot(changes_y[k], q)
        q.addcmul_(steps_s[k], (a - b)[:, None])
    # On the sphere the step runs along it (the projection then only retracts): an inward part would
    # leave the sphere against the multiplier and undo the descent.
    radial = delta * free
    inward = torch.where(multiplier > 0, _rowwise_dot(q, radial) / _rowwise_dot(radial, radial).clamp_min(1e-30),
                         torch.zeros_like(multiplier))
    q.addcmul_(radial, inward[:, None], value=-1)
    return q.neg_(), usable.any(dim=0)


def cpu_row_blocks(rows: int) -> list[slice]:
    """Consecutive slices of ``CPU_ROW_BLOCK`` rows covering ``rows``: the CPU's cache-sized blocks."""
    return [slice(start, start + CPU_ROW_BLOCK) for start in range(0, rows, CPU_ROW_BLOCK)]


def blocked_lbfgs_direction(grad: torch.Tensor, steps_s: torch.Tensor, changes_y: torch.Tensor, stored: torch.Tensor,
                            free: torch.Tensor, delta: torch.Tensor,
                            multiplier: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`lbfgs_direction`, on the CPU ``CPU_ROW_BLOCK`` rows at a time: the same numbers, far faster.

    The recursion passes over the (M, B, D) pair memory about fifteen times; for a block of rows the
    memory stays in the cache across those passes, while the whole batch's streams from main memory
    each time. Every row's arithmetic is its own, so blocks change no bit (tested). On an accelerator
    one call over all rows keeps the device queue full.
    """
    if sync_free(grad.device) or len(grad) <= CPU_ROW_BLOCK:
        return lbfgs_direction(grad, steps_s, changes_y, stored, free, delta, multiplier)
    parts = [lbfgs_direction(grad[rows], steps_s[:, rows], changes_y[:, rows], stored[:, rows], free[rows],
                             delta[rows], multiplier[rows])
             for rows in cpu_row_blocks(len(grad))]
    return torch.cat([direction for direction, _ in parts]), torch.cat([have for _, have in parts])


def sphere_multiplier(delta: torch.Tensor, grad: torch.Tensor, free: torch.Tensor,
                      radius: torch.Tensor) -> torch.Tensor:
    """The L2 ball's KKT multiplier estimate per row: ``-(g·d) / |d|^2`` over the free coordinates
    where ``|d|`` is at the radius (to ``ON_SPHERE_RTOL``) and the descent direction points out, else 0."""
    on_sphere = delta.norm(dim=1) >= (1 - ON_SPHERE_RTOL) * radius
    free_delta = delta * free
    estimate = -_rowwise_dot(grad, free_delta) / _rowwise_dot(free_delta, free_delta).clamp_min(1e-30)
    return torch.where(on_sphere, estimate.clamp_min(0), torch.zeros_like(estimate))


def minimized_loss(problem: AttackProblem, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The objective values (paper sense) at ``x + delta``, the loss this optimizer minimizes, its gradient (B, D).

    The loss is the minimized loss of the problem, except for a minimized distance (the latent
    attack's), whose square it minimizes: the same order of points, and smooth at the target code,
    where the distance's cone would break the curvature model (measured: reports/attack-strength).
    """
    values, grad = problem.loss_and_grad(delta)
    grad = grad.flatten(1)
    if problem.objective.distance and not problem.objective.maximize:
        return values, values * values, grad * (2 * values)[:, None]
    return values, -values if problem.objective.maximize else values, grad


@optimizer_with_settings("pqn", PQNSettings)
def pqn(settings: PQNSettings, problem: AttackProblem) -> OptimizationResult:
    """Projected quasi-Newton descent on the minimized loss, keeping the best evaluated point per sample.

    History column 0 is the start's value, column k the k-th trial's (paper sense). Early stopping
    retires a sample (:class:`aerobust.attacks.optimizers.EarlyStop`) and compacts the batch: a retired
    sample costs nothing.
    """
    x, batch = problem.x, len(problem)
    flat = x.flatten(1)
    start = problem.random_start() if settings.random_start else torch.zeros_like(x)
    history = torch.full((batch, settings.steps + 1), float("nan"), device=x.device)
    values, loss, grad = minimized_loss(problem, start)
    history[:, 0] = values
    size = grad.norm(dim=1)
    zero_gradient = size == 0
    nan_gradient = ~torch.isfinite(size)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    loss = torch.nan_to_num(loss, nan=math.inf)
    memory = settings.lbfgs_memory
    state = _Rows(
        rows=torch.arange(batch, device=x.device), delta=start.flatten(1).clone(), loss=loss, grad=grad,
        steps_s=flat.new_zeros(memory, batch, flat.shape[1]), changes_y=flat.new_zeros(memory, batch, flat.shape[1]),
        stored=torch.zeros(memory, batch, dtype=torch.bool, device=x.device), alpha=torch.ones_like(loss),
        best_loss=loss.clone(), best_delta=start.flatten(1).clone(), anchor=loss.clone(),
        stale=torch.zeros(batch, dtype=torch.long, device=x.device))
    best_delta = start.flatten(1).clone()  # every sample's result, written when it retires or at the end
    early_stop = early_stopping(settings)
    active = problem
    workspace = Workspace()

    for step in range(1, settings.steps + 1):
        rows, shape = state.rows, (len(state.rows), *x.shape[1:])
        bounds = (-active.x, 1 - active.x)
        radius = active.threat.radii(active.x)
        # Coordinates at a face of the feasible box whose descent direction points out of it stay there. Under
        # L-inf the feasible set is itself a box: the pixel box cut by the ball's faces at -lambda and +lambda.
        lower, upper = bounds[0].flatten(1), bounds[1].flatten(1)
        if active.threat.norm == "linf":
            lower, upper = lower.clamp_min(-radius[:, None]), upper.clamp_max(radius[:, None])
        free = ~(((state.delta <= lower) & (state.grad > 0)) | ((state.delta >= upper) & (state.grad < 0)))
        free = free.to(state.grad.dtype)
        multiplier = sphere_multiplier(state.delta, state.grad, free, radius) if active.threat.norm == "l2" \
            else torch.zeros_like(radius)
        direction, have_pairs = blocked_lbfgs_direction(state.grad, state.steps_s, state.changes_y, state.stored,
                                                        free, state.delta, multiplier)
        # Without pairs: PGD's step of alpha * first_step * lambda along the normalized (L2) or signed (L-inf) gradient.
        steepest, _, _ = step_direction(state.grad.clone(), active.threat.norm)
        length = state.alpha * settings.first_step * radius
        target = torch.where(have_pairs[:, None], state.delta + state.alpha[:, None] * direction,
                             state.delta - length[:, None] * steepest)
        trial = active.threat.project(active.x, target.view(shape), bounds, workspace=workspace).flatten(1)
        values, trial_loss, trial_grad = minimized_loss(active, trial.view(shape))
        bad = ~torch.isfinite(trial_grad.norm(dim=1))
        trial_grad = torch.nan_to_num(trial_grad, nan=0.0, posinf=0.0, neginf=0.0)
        history[rows, step] = values
        nan_gradient[rows] |= bad
        move = trial - state.delta
        # The first-order change along the step, of the Lagrangian on the sphere: a chord of the sphere has
        # delta·s = -|s|^2 / 2, so g·s alone would call a good step along the sphere an ascent.
        slope = _rowwise_dot(state.grad + multiplier[:, None] * state.delta, move)
        accept = (trial_loss < state.loss) & (trial_loss <= state.loss + ARMIJO * slope)
        better = trial_loss < state.best_loss
        state.best_loss = torch.where(better, trial_loss, state.best_loss)
        state.best_delta = torch.where(better[:, None], trial, state.best_delta)

        change = trial_grad - state.grad
        curvature = _rowwise_dot(move, change)
        stored = accept & (curvature > CURVATURE_RTOL * move.norm(dim=1) * change.norm(dim=1)) & ~bad
        # The newest pair enters last; the oldest leaves.
        if sync_free(x.device):
            state.steps_s = torch.where(stored[None, :, None], torch.cat([state.steps_s[1:], move[None]]),
                                        state.steps_s)
            state.changes_y = torch.where(stored[None, :, None], torch.cat([state.changes_y[1:], change[None]]),
                                          state.changes_y)
        else:
            # CPU: shift only the rows that store a pair (a where() over the whole memory costs more than the
            # rest of the step on small models), a block of rows at a time for the cache.
            for block in cpu_row_blocks(len(stored)):
                index = stored[block].nonzero().flatten()
                for memory, pair in ((state.steps_s, move), (state.changes_y, change)):
                    rows_of_block = memory[:, block]
                    rows_of_block[:, index] = torch.cat([rows_of_block[1:, index], pair[block][index][None]])
        state.stored = torch.where(stored[None], torch.cat([state.stored[1:], stored[None]]), state.stored)
        # A projected step that does not descend: the pairs mislead here; the next trial is a gradient step.
        state.stored &= ~(~accept & (slope >= 0))[None]
        # Rejected: the minimizer of the quadratic through loss, slope and trial loss, within the shrink range.
        curvature_along = trial_loss - state.loss - slope
        shrink = torch.where(curvature_along > 0, -slope / (2 * curvature_along).clamp_min(1e-30),
                             torch.full_like(slope, SHRINK_MAX))
        shrink = torch.nan_to_num(shrink, nan=SHRINK_MAX).clamp(SHRINK_MIN, SHRINK_MAX)
        state.alpha = torch.where(accept, torch.ones_like(state.alpha), state.alpha * shrink)
        state.delta = torch.where(accept[:, None], trial, state.delta)
        state.loss = torch.where(accept, trial_loss, state.loss)
        state.grad = torch.where(accept[:, None], trial_grad, state.grad)

        if early_stop is not None:
            state.anchor, state.stale, keep = early_stop.update(state.best_loss, state.anchor, state.stale)
            if not bool(keep.all()):
                best_delta[state.rows[~keep]] = state.best_delta[~keep]
                state = state.keep(keep)
                if len(state.rows) == 0:
                    break
                active = active.select(keep.nonzero().flatten().cpu())
    best_delta[state.rows] = state.best_delta
    return OptimizationResult(problem.threat.apply(x, best_delta.view_as(x), workspace=workspace), history,
                              zero_gradient, nan_gradient)
