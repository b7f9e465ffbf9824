"""The threat model: a norm ball of radius lambda around x intersected with the pixel box [0, 1].

The L2 projection is exact and batched. For v and per-coordinate bounds lower <= 0 <= upper the
KKT conditions of ``min ||d - v||^2 s.t. ||d||_2 <= r, lower <= d <= upper`` give
``d = clip(v / (1 + mu), lower, upper)`` with a multiplier ``mu >= 0``. Writing ``t = 1 / (1 + mu)``,
``phi(t) = ||clip(t v)||^2`` is nondecreasing and piecewise quadratic, and the root of
``phi(t) = r^2`` is found by a monotone active-set iteration: starting below the root at
``t = r / ||v||``, the quadratic through the current clipping pattern over-estimates ``phi`` to the
right, so its root is again below the true one and the iterate stays feasible at every step; it is
exact once the clipping pattern stops changing (a handful of iterations on images, against ~40 for
bisection). Nothing is rescaled after clipping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import AerobustError, ThreatViolation

NORMS = ("l2", "linf")
# Budget units: how a user's lambda becomes an absolute radius in the threat's norm. lambda = 1 in
# absolute L2 is a large change on a 32 x 32 digit and a tiny one on a 256 x 256 x 3 photograph; a
# per-pixel RMS budget means the same at every size, and latent-diffusion encoder attacks quote
# L-inf budgets in 8-bit levels (e.g. 8/255).
BUDGETS = {
    "l2": ("l2", "absolute L2 radius (the paper's lambda)"),
    "rms": ("l2", "per-pixel RMS change: L2 radius = lambda * sqrt(C * H * W)"),
    "linf": ("linf", "absolute L-inf radius in pixel units ([0, 1] images)"),
    "linf-255": ("linf", "L-inf radius in 8-bit levels: lambda / 255"),
}
# How a figure or table writes a lambda of each budget unit: "λ = 16/255 (L-inf)" rather than a bare 16.
LAMBDA_UNITS = {"l2": ("", "L2"), "rms": ("", "per-pixel RMS"), "linf": ("", "L-inf"), "linf-255": ("/255", "L-inf")}


def lambda_with_unit(lam_text: str, budget: str | None) -> str:
    """``"16"``, ``"linf-255"`` -> ``"16/255 (L-inf)"``; an unknown or missing budget is the paper's L2."""
    suffix, norm = LAMBDA_UNITS.get(budget or "l2", ("", budget))
    return f"{lam_text}{suffix} ({norm})"


# Relative slack allowed on the norm bound of a returned point (float32 rounding of the projection).
NORM_RTOL = 1e-5
# Absolute slack per pixel: x_adv - x of pixels near 1 is exact only to float32 spacing there (6e-8), which
# exceeds the relative slack for tiny budgets (L-inf 0.1/255 = 3.9e-4 allows only 3.9e-9).
PIXEL_ATOL = float(torch.finfo(torch.float32).eps)
_MAX_PROJECTION_ITERATIONS = 200


def sync_free(device: torch.device) -> bool:
    """Whether loops on ``device`` should avoid every host synchronisation (CUDA: a sync drains the
    queue); elsewhere data-dependent shortcuts are cheaper (MPS also lacks the float64 they'd need)."""
    return device.type == "cuda"


def budget_norm(budget: str) -> str:
    """The threat norm a budget unit is measured in."""
    if budget not in BUDGETS:
        raise AerobustError(f"unknown budget unit '{budget}'; use one of {', '.join(BUDGETS)}")
    return BUDGETS[budget][0]


def absolute_radius(budget: str, value: float, image_shape: Sequence[int]) -> float:
    """The radius, in the budget's norm, that ``value`` (in ``budget`` units) means for images of ``image_shape``."""
    budget_norm(budget)
    if budget == "rms":
        return float(value) * math.sqrt(math.prod(image_shape))
    if budget == "linf-255":
        return float(value) / 255.0
    return float(value)


def _per_sample(value: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A radius broadcast to shape (batch,) on ``like``'s device and dtype."""
    radius = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if radius.dim() == 0:
        return radius.expand(batch)
    if radius.shape != (batch,):
        raise AerobustError(f"a per-sample radius must have shape ({batch},), got {tuple(radius.shape)}")
    return radius


class Workspace:
    """Scratch tensors kept alive across the calls of a loop (e.g. the projection in every PGD step).

    On CPU a fresh (B, D) temporary is returned to the OS when freed, and touching a new one costs
    page faults that outweigh the arithmetic on it; reusing buffers avoids them. ``get`` hands out a
    buffer by name, reallocating only when a larger or differently shaped one is asked for; a
    buffer's content is valid until the next ``get`` of the same name.
    """

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, like: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """A contiguous uninitialized buffer of ``like``'s shape (``rows`` leading rows if given)."""
        rows = like.shape[0] if rows is None else rows
        buffer = self._buffers.get(name)
        if (buffer is None or buffer.shape[0] < rows or buffer.shape[1:] != like.shape[1:]
                or buffer.dtype != like.dtype or buffer.device != like.device):
            buffer = self._buffers[name] = torch.empty((rows, *like.shape[1:]), dtype=like.dtype, device=like.device)
        return buffer[:rows]


def _clip_masses(t: torch.Tensor, v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, squares: torch.Tensor,
                 clipped: torch.Tensor, scratch: torch.Tensor, free: torch.Tensor):
    """Per row: (sum of v^2 over coordinates that clip(t v) leaves free, ||clip(t v)||^2).

    Writes clip(t v) into ``clipped``; ``scratch`` and ``free`` are overwritten. The products are
    summed exactly as ``torch.linalg.vecdot`` would (multiply, then sum each row), without its
    fresh temporary.
    """
    torch.mul(t[:, None], v, out=scratch)
    torch.clamp(scratch, lo, hi, out=clipped)
    torch.eq(scratch, clipped, out=free)  # a float 0/1 mask: comparisons into bool are slower on CPU
    free_mass = torch.mul(squares, free, out=scratch).sum(dim=1)
    return free_mass, torch.mul(clipped, clipped, out=scratch).sum(dim=1)


def project_l2_box(v: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, radius: float | torch.Tensor,
                   *, out: torch.Tensor | None = None, workspace: Workspace | None = None) -> torch.Tensor:
    """Euclidean projection of each ``v[i]`` onto ``{||d||_2 <= radius[i]} ∩ [lower[i], upper[i]]``.

    Requires ``lower <= 0 <= upper`` elementwise (true for ``lower = -x, upper = 1 - x``). ``out``
    (contiguous, not overlapping the inputs) receives the result; ``workspace`` keeps the scratch
    buffers for the next call.
    """
    batch = v.shape[0]
    flat_v = v.reshape(batch, -1)
    lo = lower.expand_as(v).reshape(batch, -1)
    hi = upper.expand_as(v).reshape(batch, -1)
    r = _per_sample(radius, batch, flat_v)
    space = workspace if workspace is not None else Workspace()
    squares = torch.mul(flat_v, flat_v, out=space.get("squares", flat_v))
    v_norm = squares.sum(dim=1).sqrt()
    # t = 1 means mu = 0: the box alone already keeps the point inside the ball.
    t = torch.where(v_norm > 0, r / v_norm.clamp_min(torch.finfo(v.dtype).tiny), torch.ones_like(r)).clamp(max=1.0)
    # projected keeps clip(t v) of the last full pass.
    projected = (torch.empty_like(flat_v) if out is None else out).view(batch, -1)
    scratch, free, clipped = (space.get(name, flat_v) for name in ("scratch", "free", "clipped"))
    rows = torch.arange(batch, device=v.device)
    stale = rows  # rows whose t changed since the last full pass wrote clip(t v) into projected
    for _ in range(_MAX_PROJECTION_ITERATIONS):
        # Rows stop once their clipping pattern is stable; gather the others only when they are few
        # (recomputing a converged row is harmless: its t does not move).
        compact = len(rows) < batch // 2
        if compact:
            count = len(rows)
            # Fewer than half the rows: two gathered inputs fit in one buffer.
            pairs = (space.get("gathered", flat_v), space.get("gathered-bounds", flat_v))
            subset = [torch.index_select(tensor, 0, rows, out=pairs[k // 2][(k % 2) * count: (k % 2 + 1) * count])
                      for k, tensor in enumerate((flat_v, squares, lo, hi))]
            t_rows, r_rows = t[rows], r[rows]
            free_mass, total_mass = _clip_masses(t_rows, subset[0], subset[2], subset[3], subset[1],
                                                 clipped[:count], scratch[:count], free[:count])
        else:
            free_mass, total_mass = _clip_masses(t, flat_v, lo, hi, squares, projected, scratch, free)
            t_rows, r_rows = t, r
        clipped_mass = total_mass - t_rows * t_rows * free_mass
        t_next = ((r_rows * r_rows - clipped_mass).clamp_min(0) / free_mass).sqrt().clamp(max=1.0)
        moved = t_next > t_rows  # NaN (0 / 0: nothing free and nothing left) compares False
        index = rows[moved] if compact else torch.nonzero(moved).flatten()
        if not compact:
            stale = index
        if len(index) == 0:
            break
        t[index] = t_next[moved]
        rows = index
    if len(stale) > batch // 4:
        # Cheaper than gathering many rows: one more full pass (the same arithmetic, row by row).
        torch.clamp(torch.mul(t[:, None], flat_v, out=scratch), lo, hi, out=projected)
    elif len(stale):
        projected[stale] = torch.clamp(t[stale, None] * flat_v[stale], lo[stale], hi[stale])
    return projected.view_as(v)


def project_l2_box_sorted(v: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                          radius: float | torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """The projection of :func:`project_l2_box`, found by sorting instead of iterating: no host sync.

    Coordinate i runs into its bound at ``t_i = bound_i / v_i`` (``upper`` for v_i > 0, ``lower``
    for v_i < 0), so with the breakpoints sorted, ``phi`` at the k-th one is
    ``t_k^2 * (free mass after it) + (clipped mass up to it)`` from two cumulative sums. The root
    lies in the segment after the last breakpoint with ``phi <= r^2`` and solves that segment's
    quadratic exactly. Everything is a fixed sequence of tensor operations (no data-dependent loop),
    which keeps a GPU queue full; the masses are summed in float64 so that a 256 x 256 x 3 image
    stays inside the ball to ``NORM_RTOL``. Costs a sort per call, so CPU code uses the iteration.
    """
    batch = v.shape[0]
    flat_v = v.reshape(batch, -1)
    lo = lower.expand_as(v).reshape(batch, -1)
    hi = upper.expand_as(v).reshape(batch, -1)
    r = _per_sample(radius, batch, flat_v).double()
    face = torch.where(flat_v > 0, hi, lo).double()
    wide = flat_v.double()
    moving = wide != 0
    # Breakpoints at t >= 1 are never reached (t <= 1): they stay free, sorted last as +inf.
    breaks = torch.where(moving, face / torch.where(moving, wide, 1.0), torch.inf)
    breaks = torch.where(breaks < 1, breaks, torch.inf)
    breaks, order = torch.sort(breaks, dim=1)
    squares = wide * wide
    free_total = squares.sum(dim=1, keepdim=True)
    reached = torch.isfinite(breaks)
    # Prefix sums with a leading 0: index m = "the first m breakpoints have clipped".
    zero = squares.new_zeros(batch, 1)
    freed = torch.cat([zero, torch.cumsum(torch.where(reached, squares.gather(1, order), 0.0), dim=1)], dim=1)
    clipped = torch.cat([zero, torch.cumsum(torch.where(reached, (face * face).gather(1, order), 0.0), dim=1)], dim=1)
    phi = torch.where(reached, breaks.square() * (free_total - freed[:, 1:]) + clipped[:, 1:], torch.inf)
    passed = (phi <= (r * r)[:, None]).sum(dim=1, keepdim=True)  # phi is nondecreasing: a prefix
    free_mass = (free_total - freed.gather(1, passed)).squeeze(1)
    room = ((r * r) - clipped.gather(1, passed).squeeze(1)).clamp_min(0)
    t = torch.where(free_mass > 0, (room / free_mass.clamp_min(torch.finfo(torch.float64).tiny)).sqrt(),
                    torch.ones_like(r)).clamp(max=1.0)
    result = torch.mul(t.to(flat_v.dtype)[:, None], flat_v, out=None if out is None else out.view(batch, -1))
    return torch.clamp(result, lo, hi, out=result).view_as(v)


def project_linf_box(v: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, radius: float | torch.Tensor,
                     *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Projection onto ``{||d||_inf <= r} ∩ [lower, upper]``: both sets are boxes, so clip twice."""
    r = _per_sample(radius, v.shape[0], v).view(-1, *([1] * (v.dim() - 1)))
    result = torch.minimum(v, r, out=torch.empty_like(v) if out is None else out)
    torch.maximum(result, -r, out=result)
    torch.minimum(result, upper, out=result)
    return torch.maximum(result, lower, out=result)


def seeded_noise(seeds: Sequence[int] | torch.Tensor, shape: Sequence[int],
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample draws ``(normal (B, *shape), uniform (B,))``, each row from its own seed only."""
    normals, uniforms = [], []
    for seed in torch.as_tensor(seeds).tolist():
        generator = torch.Generator().manual_seed(int(seed))
        normals.append(torch.randn(tuple(shape), generator=generator))
        uniforms.append(torch.rand((), generator=generator))
    return torch.stack(normals).to(device), torch.stack(uniforms).to(device)


@dataclass(frozen=True)
class Threat:
    """``{x + d : ||d||_norm <= radius, 0 <= x + d <= 1}``; ``radius`` is a float or a (B,) tensor."""

    radius: float | torch.Tensor
    norm: str = "l2"

    def __post_init__(self):
        if self.norm not in NORMS:
            raise AerobustError(f"unknown threat norm '{self.norm}'; use one of {', '.join(NORMS)}")
        radius = torch.as_tensor(self.radius, dtype=torch.float64)
        if radius.dim() > 1:
            raise AerobustError("the radius must be a number or a 1-D tensor with one radius per sample")
        if not bool(torch.isfinite(radius).all()) or bool((radius < 0).any()):
            raise AerobustError("the attack radius lambda must be a finite number >= 0")

    def radii(self, x: torch.Tensor) -> torch.Tensor:
        return _per_sample(self.radius, x.shape[0], x)

    def select(self, index: torch.Tensor) -> "Threat":
        """The threat restricted to the samples ``index`` (for sub-batches)."""
        if torch.as_tensor(self.radius).dim() == 0:
            return self
        return Threat(torch.as_tensor(self.radius)[index.to(torch.as_tensor(self.radius).device)], self.norm)

    def project(self, x: torch.Tensor, delta: torch.Tensor,
                bounds: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                out: torch.Tensor | None = None, workspace: Workspace | None = None) -> torch.Tensor:
        """Nearest perturbation to ``delta`` (Euclidean) that keeps ``x + delta`` inside the threat.

        For loops that project many times: ``bounds`` may pass ``(-x, 1 - x)`` precomputed, ``out``
        a contiguous tensor (not overlapping ``delta``) to write the result into, ``workspace`` the
        scratch buffers to reuse.
        """
        lower, upper = bounds if bounds is not None else (-x, 1 - x)
        if self.norm == "l2" and sync_free(delta.device):
            # A GPU waits for nothing in the sorted form; the iteration's convergence checks would sync.
            return project_l2_box_sorted(delta, lower, upper, self.radii(x), out=out)
        if self.norm == "l2":
            return project_l2_box(delta, lower, upper, self.radii(x), out=out, workspace=workspace)
        return project_linf_box(delta, lower, upper, self.radii(x), out=out)

    def apply(self, x: torch.Tensor, delta: torch.Tensor, *, workspace: Workspace | None = None) -> torch.Tensor:
        """``x + project(delta)``, clamped to [0, 1] against float rounding of ``x + (1 - x)``."""
        return (x + self.project(x, delta, workspace=workspace)).clamp_(0.0, 1.0)

    def random_start(self, x: torch.Tensor, seeds: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """A uniform draw from the norm ball (one seed per sample), projected onto the box."""
        normal, uniform = seeded_noise(seeds, x.shape[1:], x.device)
        normal, uniform = normal.to(x.dtype), uniform.to(x.dtype)
        radius = self.radii(x)
        shape = (-1, *([1] * (x.dim() - 1)))
        if self.norm == "l2":
            dims = normal[0].numel()
            direction = normal / normal.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
            delta = direction * (radius * uniform.pow(1.0 / dims)).view(shape)
        else:
            # Map the normal draw to a uniform one in [-1, 1] through the normal CDF.
            delta = torch.special.erf(normal / 2 ** 0.5) * radius.view(shape)
        return self.project(x, delta)

    def distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Per-sample size of the perturbation in this threat's norm."""
        order = 2 if self.norm == "l2" else float("inf")
        return torch.linalg.vector_norm((x_adv - x).flatten(1), ord=order, dim=1)

    def check(self, x: torch.Tensor, x_adv: torch.Tensor) -> None:
        """Raise :class:`ThreatViolation` unless every ``x_adv[i]`` lies in the threat around ``x[i]``."""
        if x_adv.shape != x.shape:
            raise ThreatViolation(f"attack returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}")
        if not bool(torch.isfinite(x_adv).all()):
            raise ThreatViolation("attack returned non-finite pixels")
        low, high = float(x_adv.min()), float(x_adv.max())
        if low < 0.0 or high > 1.0:
            raise ThreatViolation(f"attack left the pixel box [0, 1]: values in [{low:.6g}, {high:.6g}]")
        size = self.distance(x, x_adv)
        # the pixel slack summed over pixels in L2 (sqrt of their count), once in L-inf
        pixels = x[0].numel() if self.norm == "l2" else 1
        bound = self.radii(x) * (1 + NORM_RTOL) + PIXEL_ATOL * pixels ** 0.5
        over = size > bound
        if bool(over.any()):
            worst = int(torch.argmax(size - bound))
            raise ThreatViolation(
                f"attack left the {self.norm} ball on {int(over.sum())} of {len(size)} samples: "
                f"||delta|| = {float(size[worst]):.8g} > lambda = {float(self.radii(x)[worst]):.8g}"
            )

    def config(self) -> dict:
        radius = torch.as_tensor(self.radius)
        return {"norm": self.norm, "box": [0.0, 1.0], "norm_rtol": NORM_RTOL, "pixel_atol": PIXEL_ATOL,
                "radius": float(radius) if radius.dim() == 0 else radius.tolist()}
