"""The registered attacks: the paper's (eq. 12, eq. 13, the latent classifier's cross-entropy) and the
field's others (posterior-KL attacks on VAEs, the Jacobian direction, universal perturbations)."""
from __future__ import annotations

import math

import torch

from ..errors import AerobustError
from ..registry import register_attack
from ..runtime import frozen_modules
from ..threat import Threat, absolute_radius, seeded_noise
from .base import Attack
from .optimizers import SCHEDULES, step_direction
from .problem import AttackProblem, OptimizationResult, input_gradient, sample_seeds
from .sweep import check_ids, check_images, check_lambdas


@register_attack("latent")
class LatentAttack(Attack):
    """Latent-space attack: move the code g(x + d) towards the code of a target image of another class.

    Paper: Saseendran et al., Trading off Image Quality for Robustness is not Necessary with Regularized
        Deterministic Autoencoders, eq. 12 (minimise ||g(x + d) - g(x_t)||_2).
    Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
    Arguments: the options of :class:`Attack` (optimizer="pgd", steps=100, restarts=2, step_size=0.25,
        budget="l2", ...).
    Shape: x (N, C, H, W), targets (trials, N, C, H, W) -> x_adv (L, trials, N, C, H, W), loss (L, trials, N).

    Examples::
        >>> attack = ATTACKS.create("latent", steps=100)
        >>> result = attack.sweep(model, x, [1.0, 3.0], trials=2, seed=0, targets=targets)
    """

    objective_name = "latent"
    needs_targets = True


@register_attack("max-damage")
class MaxDamageAttack(Attack):
    """Maximum-damage attack: push the reconstruction of x + d as far as possible from that of x.

    Paper: Saseendran et al., Trading off Image Quality for Robustness is not Necessary with Regularized
        Deterministic Autoencoders, eq. 13 (maximise ||f(g(x + d)) - f(g(x))||_2).
    Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
    Arguments: the options of :class:`Attack` (optimizer="pgd", steps=100, restarts=2, step_size=0.25,
        budget="l2", ...).
    Shape: x (N, C, H, W) in [0, 1] -> SweepResult.x_adv (L, trials, N, C, H, W), attack_loss (L, trials, N).

    Examples::
        >>> attack = ATTACKS.create("max-damage", steps=100)
        >>> result = attack.sweep(model, x, [1.0, 3.0], trials=2, seed=0)
    """

    objective_name = "max-damage"


@register_attack("latent-classifier")
class LatentClassifierAttack(Attack):
    """Latent-classifier attack: cross-entropy of a classifier head on the codes g(x + d).

    Paper: Saseendran et al., Trading off Image Quality for Robustness is not Necessary with Regularized
        Deterministic Autoencoders, Table 3 (accuracy of a latent classifier under attack).
    Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
    Arguments:
        targeted (bool): aim at a reproducible other class instead of away from the label. (Default: False)
        optimizer (str): "pgd", "apgd", "fgsm" or "lbfgs-legacy" (aerobust list optimizers). (Default: "pgd")
        steps (int): optimizer iterations. (Default: 100)
        restarts (int): random starts; the worst case per sample is kept. (Default: 2 for PGD)
        step_size (float): first PGD step as a fraction of lambda. (Default: 0.25)
        budget (str): unit of lambda: "l2", "rms", "linf" or "linf-255". (Default: "l2")
        ...and the other options of :class:`aerobust.attacks.Attack`.
    Shape: x (N, C, H, W), labels (N,), classifier codes (N, latent_dim) -> logits (N, K);
        x_adv (L, trials, N, C, H, W).

    Examples::
        >>> attack = ATTACKS.create("latent-classifier", targeted=False)
        >>> result = attack.sweep(model, x, [1.0], trials=1, seed=0, labels=labels, classifier=head)
    """

    objective_name = "latent-classifier"
    needs_classifier = True

    def __init__(self, *, targeted: bool = False, **options):
        super().__init__(targeted=targeted, **options)


@register_attack("latent-kl")
class LatentKLAttack(Attack):
    """Posterior KL attack on VAEs: minimise KL(q(z|x + d) || q(z|x_t)) towards a target image's posterior.

    Paper: Gondim-Ribeiro, Tabacof and Valle, Adversarial attacks on variational autoencoders (2018).
    Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
    Arguments: the options of :class:`Attack` (optimizer="pgd", steps=100, restarts=2, step_size=0.25,
        budget="l2", ...).
    Shape: x (N, C, H, W), targets (trials, N, C, H, W) -> x_adv (L, trials, N, C, H, W), loss (L, trials, N).

    Examples::
        >>> attack = ATTACKS.create("latent-kl", steps=100)
        >>> result = attack.sweep(vae, x, [1.0], trials=2, seed=0, targets=targets)
    """

    objective_name = "latent-kl"
    needs_targets = True


@register_attack("latent-skl")
class LatentSymmetricKLAttack(Attack):
    """Symmetric posterior KL attack on VAEs: minimise KL(q_a || q_t) + KL(q_t || q_a) to a target's posterior.

    Paper: Kuzina, Welling and Tomczak, Diagnosing vulnerability of variational auto-encoders to
        adversarial attacks (RobustML workshop, ICLR 2021).
    Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
    Arguments: the options of :class:`Attack` (optimizer="pgd", steps=100, restarts=2, step_size=0.25,
        budget="l2", ...).
    Shape: x (N, C, H, W), targets (trials, N, C, H, W) -> x_adv (L, trials, N, C, H, W), loss (L, trials, N).

    Examples::
        >>> attack = ATTACKS.create("latent-skl", steps=100)
        >>> result = attack.sweep(vae, x, [1.0], trials=2, seed=0, targets=targets)
    """

    objective_name = "latent-skl"
    needs_targets = True


@register_attack("max-kl")
class MaxKLAttack(Attack):
    """Untargeted posterior attack on VAEs: maximise KL(q(z|x + d) || q(z|x)).

    Paper: Kuzina, Welling and Tomczak (2021), the untargeted form of the posterior attacks.
    Distance: L2 ball of radius lambda (budget="linf": L-inf ball), inside the [0, 1] box.
    Arguments: the options of :class:`Attack` (optimizer="pgd", steps=100, restarts=2, step_size=0.25,
        budget="l2", ...).
    Shape: x (N, C, H, W) in [0, 1] -> SweepResult.x_adv (L, trials, N, C, H, W), attack_loss (L, trials, N).

    Examples::
        >>> attack = ATTACKS.create("max-kl", steps=100)
        >>> result = attack.sweep(vae, x, [1.0], trials=2, seed=0)
    """

    objective_name = "max-kl"


def _jacobian_products(encode, x: torch.Tensor):
    """``(J v, J^T u)`` at ``x`` as two functions, from one forward pass of ``encode``.

    ``J v`` is taken in forward mode (``torch.func.jvp``); encoders with operations that have no
    forward-mode rule (e.g. custom autograd functions without ``jvp``) get it from the same graph
    by differentiating the pullback with respect to its cotangent (the double-backward trick).
    """
    inputs = x.detach().requires_grad_(True)
    codes = encode(inputs)
    cotangent = torch.zeros_like(codes, requires_grad=True)
    (pulled,) = torch.autograd.grad(codes, inputs, cotangent, create_graph=True)

    def pullback(u: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(codes, inputs, u, retain_graph=True)[0]

    def backward_mode(v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(pulled, cotangent, v, retain_graph=True)[0]

    def forward_mode(v: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(encode, (x,), (v,))[1]

    try:
        forward_mode(torch.zeros_like(x))
    except (RuntimeError, NotImplementedError):
        return backward_mode, pullback
    return forward_mode, pullback


def top_singular_directions(encode, x: torch.Tensor, iterations: int,
                            seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the top right-singular vector of the encoder Jacobian at ``x`` and its singular value.

    Batched power iteration on ``J^T J`` with Jacobian-vector and vector-Jacobian products
    (:func:`_jacobian_products`); rows are independent because the encoder treats images
    independently. The start of each row is a normal draw from its seed.
    Returns ``(directions (B, C, H, W) of unit L2 norm, singular values (B,))``.
    """
    start, _ = seeded_noise(seeds, x.shape[1:], x.device)
    direction = start.to(x.dtype)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    with torch.enable_grad():
        forward, pullback = _jacobian_products(encode, x)
        for _ in range(int(iterations)):
            image = pullback(forward(direction))
            size = image.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
            # A zero Jacobian (dead units) has no top direction: keep the previous iterate there.
            direction = torch.where(size > 0, image / size.clamp_min(1e-30), direction).detach()
        singular = forward(direction).flatten(1).norm(dim=1).detach()
    return direction, singular


@register_attack("jacobian")
class JacobianAttack(Attack):
    """Kuzina et al.'s unsupervised attack: the encoder Jacobian's top singular direction at the full budget.

    The direction (power iteration, ``power_iterations`` steps) is scaled to the budget (L2 norm or
    L-inf norm lambda), projected onto the threat set, and of its two signs the one doing more
    reconstruction damage (the max-damage objective, eq. 13) is kept. One shot, no gradient steps:
    beside max-damage it shows whether a single local direction already breaks the model.

    Paper: Kuzina, Welling and Tomczak (2021), the encoder-Jacobian (unsupervised) attack.
    Distance: L2 ball of radius lambda (budget="linf": the direction scaled to L-inf lambda), inside the box.
    Arguments: power_iterations (int, default 20), restarts (int, default 1) and the options of :class:`Attack`.
    Shape: x (N, C, H, W) in [0, 1] -> SweepResult.x_adv (L, trials, N, C, H, W).

    Examples::
        >>> attack = ATTACKS.create("jacobian", power_iterations=20)
        >>> result = attack.sweep(model, x, [1.0], trials=1, seed=0)
    """

    objective_name = "max-damage"
    settings = ("power_iterations",)

    def __init__(self, *, power_iterations: int = 20, restarts: int = 1, **options):
        if int(power_iterations) < 1:
            raise AerobustError(f"power_iterations must be at least 1, got {power_iterations}")
        self.power_iterations = int(power_iterations)
        super().__init__(restarts=restarts, **options)

    def optimize(self, problem: AttackProblem) -> OptimizationResult:
        model = problem.objective.model
        x = problem.x
        direction, _ = top_singular_directions(model.encode, x, self.power_iterations, problem.seeds)
        shape = (-1, *([1] * (x.dim() - 1)))
        if self.norm == "linf":
            direction = direction / direction.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(shape)
        delta = direction * problem.threat.radii(x).view(shape)
        with torch.no_grad():
            plus, minus = problem.threat.apply(x, delta), problem.threat.apply(x, -delta)
            stronger = problem.objective.stronger(problem.values(minus), problem.values(plus))
        return OptimizationResult(torch.where(stronger.view(shape), minus, plus))


@register_attack("universal")
class UniversalAttack(Attack):
    """One perturbation for the whole image set (maximum mean reconstruction damage), projected per image.

    Per (lambda, trial, restart) one perturbation ``v`` with ``||v|| <= lambda`` is fitted by projected
    gradient ascent (``steps``, ``step_size``, ``schedule`` as for PGD) on the mean over all images of
    eq. 13 at ``clip(x + v, 0, 1)``; every image then gets ``x + P_x(v)``, the exact projection onto its
    own threat set (for ``||v|| <= lambda`` that is the clip to the pixel box). Its attack loss beside
    the per-image max-damage attack's shows how much of the per-image damage one shared pattern reaches.
    ``restarts`` defaults to 1: with more, the sweep keeps each image's worst restart, so an image may
    then take another of the shared patterns than its neighbour.

    Paper: Moosavi-Dezfooli et al., Universal adversarial perturbations (CVPR 2017), here on eq. 13.
    Distance: one shared perturbation in the L2 (or L-inf) ball of radius lambda, clipped to the box per image.
    Arguments: steps (default 100), step_size (0.25), schedule ("cosine"), restarts (1) and the options of
        :class:`Attack`.
    Shape: x (N, C, H, W) in [0, 1] -> SweepResult.x_adv (L, trials, N, C, H, W); one pattern per (L, trial).

    Examples::
        >>> attack = ATTACKS.create("universal", steps=100)
        >>> result = attack.sweep(model, x, [1.0], trials=1, seed=0)
    """

    objective_name = "max-damage"
    settings = ("steps", "step_size", "schedule")
    fits_over_image_set = True

    def __init__(self, *, restarts: int = 1, **options):
        super().__init__(restarts=restarts, **options)
        self._fitted: dict | None = None

    def sweep(self, model, x, lambdas, trials, seed, *, image_ids=None, **inputs):
        """Fits the shared perturbations on all of ``x`` first; ``optimize`` then looks them up per row."""
        lambdas = check_lambdas(lambdas)
        device = getattr(model, "device", x.device)
        images = check_images(x, model).to(device)
        ids = check_ids(image_ids, len(images))
        with frozen_modules(model):
            self._fitted = self._fit(model, images, lambdas, int(trials), seed, ids)
        try:
            return super().sweep(model, x, lambdas, trials, seed, image_ids=image_ids, **inputs)
        finally:
            self._fitted = None

    def _fit(self, model, x: torch.Tensor, lambdas: list[float], trials: int, seed: int, ids: torch.Tensor) -> dict:
        """{(radius, row seed): shared perturbation}, keyed like the rows the base sweep builds."""
        groups = [(lam, t, r) for lam in lambdas for t in range(trials) for r in range(self.restarts) if lam > 0]
        if not groups:
            return {}
        count, n_images = len(groups), len(x)
        # lambdas are in the attack's budget unit; the threat and the rows' keys use the absolute radius.
        absolute = {lam: absolute_radius(self.budget, lam, x.shape[1:]) for lam in lambdas}
        radius = torch.tensor([absolute[g[0]] for g in groups], dtype=x.dtype, device=x.device)
        # "auto" chunks one image set at a time: the least the base sweep attacks at once for one lambda.
        chunk_size = n_images if self.batch_size == "auto" else self.batch_size
        ball = Threat(radius, self.norm)
        # Around mid-grey the box [-0.5, 0.5] leaves the start a uniform draw from the ball for any
        # budget below half the pixel range; it only seeds the ascent.
        grey = torch.full((count, *x.shape[1:]), 0.5, dtype=x.dtype, device=x.device)
        shared = ball.random_start(grey, sample_seeds(seed, "universal", [g[1] for g in groups], [g[2] for g in groups]))
        unit_box = (-torch.ones_like(grey), torch.ones_like(grey))
        objective = self.objective.bind(model, x)
        best, best_damage = shared.clone(), torch.full((count,), -math.inf, device=x.device)
        rows = torch.arange(count * n_images, device=x.device)
        shape = (-1, *([1] * (x.dim() - 1)))
        for step in range(self.steps + 1):
            damage = torch.zeros(count, device=x.device)
            gradient = torch.zeros_like(shared)
            for chunk in rows.split(chunk_size):
                group, image = chunk // n_images, chunk % n_images
                with torch.enable_grad():
                    pattern = shared.detach().requires_grad_(True)
                    values = objective.select(image).values((x[image] + pattern[group]).clamp(0.0, 1.0))
                    total = torch.zeros(count, device=x.device).index_add(0, group, values) / n_images
                    gradient += input_gradient(-total, pattern)
                damage += total.detach()
            improved = damage > best_damage
            best[improved], best_damage[improved] = shared[improved], damage[improved]
            if step == self.steps:
                break
            direction, _, _ = step_direction(gradient, self.norm)
            length = self.step_size * SCHEDULES[self.schedule](step, self.steps) * radius
            shared = ball.project(grey, shared - direction * length.view(shape), unit_box)
        row_seeds = {}
        for index, (lam, t, r) in enumerate(groups):
            key_radius = float(torch.tensor(absolute[lam], dtype=x.dtype))
            for row_seed in sample_seeds(seed, "start", [t] * n_images, ids.tolist(), [r] * n_images).tolist():
                row_seeds[(key_radius, row_seed)] = best[index]
        return row_seeds

    def optimize(self, problem: AttackProblem) -> OptimizationResult:
        if self._fitted is None:
            raise AerobustError("the universal attack fits one perturbation over a whole image set; "
                                "run it through sweep() (or an audit), not on single rows")
        radii = problem.threat.radii(problem.x).tolist()
        try:
            shared = torch.stack([self._fitted[(float(lam), int(s))] for lam, s in zip(radii, problem.seeds.tolist())])
        except KeyError:
            raise AerobustError("the universal attack was asked for rows it did not fit; run it through sweep()") from None
        return OptimizationResult(problem.threat.apply(problem.x, shared.to(problem.x.device)))
