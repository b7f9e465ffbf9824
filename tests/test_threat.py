"""The threat model: exact batched projection onto the L2 ball ∩ pixel box, checks, random starts."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from aerobust.errors import AerobustError, ThreatViolation
from aerobust.threat import (Threat, Workspace, absolute_radius, budget_norm, project_l2_box, project_l2_box_sorted,
                            project_linf_box)

floats = st.floats(-3.0, 3.0, allow_nan=False, width=64)
pixels = st.floats(0.0, 1.0, allow_nan=False, width=64)


@st.composite
def instances(draw, max_dim=6):
    dim = draw(st.integers(1, max_dim))
    x = torch.tensor(draw(st.lists(pixels, min_size=dim, max_size=dim)), dtype=torch.float64)
    v = torch.tensor(draw(st.lists(floats, min_size=dim, max_size=dim)), dtype=torch.float64)
    radius = draw(st.floats(0.0, 3.0, allow_nan=False))
    return x, v, radius


def project(x, v, radius):
    return project_l2_box(v[None], -x[None], 1 - x[None], radius)[0]


def reference_projection(x, v, radius):
    """Slow independent solver: SLSQP on min ||d - v||^2 s.t. ||d||^2 <= r^2 and the box."""
    x, v = x.numpy(), v.numpy()
    result = minimize(lambda d: ((d - v) ** 2).sum(), np.clip(v, -x, 1 - x) * 0,
                      jac=lambda d: 2 * (d - v), method="SLSQP",
                      bounds=list(zip(-x, 1 - x)),
                      constraints=[{"type": "ineq", "fun": lambda d: radius ** 2 - (d ** 2).sum(),
                                    "jac": lambda d: -2 * d}],
                      options={"ftol": 1e-15, "maxiter": 1000})
    return torch.from_numpy(result.x)


@settings(max_examples=60, deadline=None)
@given(instances())
def test_projection_is_feasible(instance):
    x, v, radius = instance
    d = project(x, v, radius)
    assert float(d.norm()) <= radius * (1 + 1e-12) + 1e-15
    assert bool(((x + d) >= -1e-15).all()) and bool(((x + d) <= 1 + 1e-15).all())


@settings(max_examples=60, deadline=None)
@given(instances())
def test_projection_is_idempotent(instance):
    x, v, radius = instance
    d = project(x, v, radius)
    torch.testing.assert_close(project(x, d, radius), d, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(instances(max_dim=5))
def test_projection_is_the_nearest_feasible_point(instance):
    x, v, radius = instance
    d = project(x, v, radius)
    slow = reference_projection(x, v, radius)
    # The slow solver's point, pulled exactly into the feasible set, is never closer to v than ours.
    slow = torch.clamp(slow, -x, 1 - x)
    if float(slow.norm()) > radius:
        slow = slow * (radius / float(slow.norm()))
    assert float((d - v).norm()) <= float((slow - v).norm()) + 1e-9
    torch.testing.assert_close(d, slow, rtol=0, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(instances())
def test_projection_satisfies_the_variational_inequality(instance):
    """For the nearest point p of a convex set, <v - p, q - p> <= 0 for every feasible q."""
    x, v, radius = instance
    p = project(x, v, radius)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        q = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        q = project(x, q, radius)
        assert float(torch.dot(v - p, q - p)) <= 1e-9


def test_batched_projection_matches_per_sample_and_takes_per_sample_radii(mnist_test):
    x = mnist_test.images[:16]
    generator = torch.Generator().manual_seed(1)
    v = torch.randn(x.shape, generator=generator) * 0.2
    radius = torch.linspace(0.0, 4.0, 16)
    batched = project_l2_box(v, -x, 1 - x, radius)
    for i in range(16):
        single = project_l2_box(v[i:i + 1], -x[i:i + 1], 1 - x[i:i + 1], float(radius[i]))
        torch.testing.assert_close(batched[i:i + 1], single)
    norms = batched.flatten(1).norm(dim=1)
    assert bool((norms <= radius * (1 + 1e-5)).all())
    assert bool((batched == 0)[0].all())  # radius 0 leaves nothing
    # Real images clip: the binding samples sit on the sphere, not inside it.
    assert bool((norms[8:] > radius[8:] * (1 - 1e-5)).all())


def test_reused_workspace_and_out_give_the_fresh_projection_bit_for_bit(mnist_test):
    # PGD projects every step into the same buffers, over shrinking row sets (early stopping):
    # stale scratch content or a sliced buffer must never leak into a result.
    x = mnist_test.images[:40]
    generator = torch.Generator().manual_seed(5)
    workspace = Workspace()
    for rows, scale, norm in ((40, 0.5, "l2"), (40, 2.0, "l2"), (7, 1.0, "l2"), (40, 0.05, "l2"), (13, 0.5, "linf")):
        v = torch.randn((rows, *x.shape[1:]), generator=generator) * scale
        radius = torch.rand(rows, generator=generator) * 3
        threat = Threat(radius, norm)
        out = torch.full_like(v, float("nan"))
        fresh = threat.project(x[:rows], v)
        reused = threat.project(x[:rows], v, out=out, workspace=workspace)
        assert reused.data_ptr() == out.data_ptr()
        assert torch.equal(reused, fresh)
        threat.check(x[:rows], threat.apply(x[:rows], reused, workspace=workspace))


def test_linf_projection_is_the_double_clip():
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    v = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    d = project_linf_box(v, -x, 1 - x, 0.3)
    expected = torch.minimum(torch.maximum(v.clamp(-0.3, 0.3), -x), 1 - x)
    torch.testing.assert_close(d, expected)
    Threat(0.3, "linf").check(x, x + d)


def test_check_rejects_points_outside_the_threat(mnist_test):
    x = mnist_test.images[:4]
    threat = Threat(1.0)
    generator = torch.Generator().manual_seed(4)
    delta = threat.project(x, torch.randn(x.shape, generator=generator))
    threat.check(x, threat.apply(x, delta))
    # Brighten every pixel towards 1 with total length 1.01: inside the box, outside the ball.
    room = 1 - x
    longer = room * (1.01 / room.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
    assert float(longer.flatten(1).norm(dim=1).min()) > 1.0 and float((x + longer).max()) <= 1.0
    with pytest.raises(ThreatViolation, match="ball"):
        threat.check(x, x + longer)
    with pytest.raises(ThreatViolation, match="box"):
        threat.check(x, x - 0.001)


def test_random_start_is_feasible_and_depends_only_on_each_seed(mnist_test):
    x = mnist_test.images[:6]
    threat = Threat(torch.tensor([0.5, 1.0, 2.0, 3.0, 0.0, 1.0]))
    seeds = torch.tensor([11, 12, 13, 14, 15, 16])
    start = threat.random_start(x, seeds)
    threat.check(x, threat.apply(x, start))
    again = Threat(torch.tensor([2.0, 1.0])).random_start(x[[2, 5]], seeds[[2, 5]])
    torch.testing.assert_close(again, start[[2, 5]])
    assert bool((start[4] == 0).all())


def test_threat_rejects_bad_settings():
    with pytest.raises(AerobustError, match="lambda"):
        Threat(-1.0)
    with pytest.raises(AerobustError, match="norm"):
        Threat(1.0, "l1")
    with pytest.raises(AerobustError, match="lambda"):
        Threat(float("nan"))


@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 40)), value=st.floats(0, 2))
def test_budget_units_match_their_definitions(shape, value):
    # rms: a change of `value` at every pixel has exactly the radius's L2 norm.
    uniform_change = torch.full(shape, value, dtype=torch.float64)
    assert absolute_radius("rms", value, shape) == pytest.approx(float(uniform_change.norm()), rel=1e-12)
    assert absolute_radius("linf-255", value * 255, shape) == pytest.approx(value, rel=1e-12)
    assert absolute_radius("l2", value, shape) == absolute_radius("linf", value, shape) == value
    assert [budget_norm(b) for b in ("l2", "rms", "linf", "linf-255")] == ["l2", "l2", "linf", "linf"]


@settings(max_examples=80, deadline=None)
@given(instances(max_dim=8))
def test_sorted_projection_equals_the_iterative_one(instance):
    """The sync-free form (used on CUDA) finds the same point as the validated iteration."""
    x, v, radius = instance
    sorted_form = project_l2_box_sorted(v[None], -x[None], 1 - x[None], radius)[0]
    torch.testing.assert_close(sorted_form, project(x, v, radius), rtol=0, atol=1e-12)


def test_sorted_projection_on_real_and_large_images(mnist_test):
    x = mnist_test.images[:16]
    generator = torch.Generator().manual_seed(2)
    v = torch.randn(x.shape, generator=generator) * 0.2
    v[3] = 0  # nothing to move
    radius = torch.linspace(0.0, 4.0, 16)
    iterative = project_l2_box(v, -x, 1 - x, radius)
    sorted_form = project_l2_box_sorted(v, -x, 1 - x, radius, out=torch.empty_like(v))
    torch.testing.assert_close(sorted_form, iterative, rtol=0, atol=1e-6)
    # 3 x 256 x 256 photographs-sized rows: float64 masses keep float32 results inside the ball
    photo = torch.rand(4, 3, 256, 256, generator=generator)
    step = torch.randn(photo.shape, generator=generator)
    radii = torch.tensor([0.5, 5.0, 50.0, 500.0])
    projected = project_l2_box_sorted(step, -photo, 1 - photo, radii)
    Threat(radii).check(photo, photo + projected)
    torch.testing.assert_close(projected, project_l2_box(step, -photo, 1 - photo, radii), rtol=0, atol=1e-5)
