"""The sweep engine: one attack over lambdas x trials x restarts x images, threat-checked and chunked.

:func:`run_sweep` is what ``Attack.sweep`` runs; the attack supplies the objective, the optimizer
(``attack.optimize``) and the settings. Also here: the checks of a sweep's inputs and the
reproducible choice of targets (:func:`choose_targets`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import AerobustError, ShapeError
from ..runtime import frozen_modules
from ..threat import Threat, absolute_radius
from .chunking import images_per_chunk, run_in_chunks, samples_per_call, sweep_chunks
from .problem import AttackProblem, SweepResult, derive_seed, sample_seeds
from .sanity import sanity_flags


def run_sweep(attack, model, x: torch.Tensor, lambdas: Sequence[float] | float, trials: int, seed: int, *,
          targets: torch.Tensor | None = None, labels: torch.Tensor | None = None,
          classifier: nn.Module | None = None, image_ids: torch.Tensor | None = None) -> SweepResult:
    """Attack every image at every lambda in every trial with ``attack``; see :class:`SweepResult`.

    Flattens lambdas x trials x restarts x images into one batch, hands it to ``attack.optimize`` in
    chunks, checks every returned point against its threat, keeps the per-sample worst case over
    restarts and runs the sanity checks. The start of a (trial, image, restart) is the same random
    direction at every lambda, drawn at a radius scaled by lambda, so the curves over lambda are not
    blurred by independent starts.
    """
    lambdas = check_lambdas(lambdas)
    trials = int(trials)
    if trials < 1:
        raise AerobustError("trials must be at least 1")
    out_device = x.device
    device = getattr(model, "device", x.device)
    x = check_images(x, model).to(device)
    n_images = x.shape[0]
    image_ids = check_ids(image_ids, n_images)
    if attack.needs_targets:
        if targets is None:
            raise AerobustError(f"attack '{attack.name}' needs target images (targets of shape (trials, N, C, H, W))")
        if tuple(targets.shape) != (trials, *x.shape):
            raise ShapeError(f"targets must have shape {(trials, *x.shape)}, got {tuple(targets.shape)}")
        targets = targets.to(device)
    if attack.needs_classifier and classifier is None:
        raise AerobustError(f"attack '{attack.name}' needs a classifier head on the latent codes (classifier=)")
    if labels is not None:
        labels = torch.as_tensor(labels).long().to(device)
        if labels.shape != (n_images,):
            raise ShapeError(f"labels must have shape ({n_images},), got {tuple(labels.shape)}")

    target_classes = None
    if getattr(attack.objective, "targeted", False):
        target_classes = _target_classes(model, classifier, labels, trials, seed, image_ids).to(device)

    shape = (len(lambdas), trials, attack.restarts, n_images)
    grid = torch.stack(torch.meshgrid(*(torch.arange(s) for s in shape), indexing="ij")).flatten(1)
    lam_idx, trial_idx, restart_idx, img_idx = grid
    ids = image_ids[img_idx]
    radii = [absolute_radius(attack.budget, lam, x.shape[1:]) for lam in lambdas]
    radius = torch.tensor(radii, dtype=x.dtype)[lam_idx]
    seeds = sample_seeds(seed, "start", trial_idx.tolist(), ids.tolist(), restart_idx.tolist())
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
        objective = attack.objective.bind(model, x[n], targets=row_targets, labels=row_labels,
                                        classifier=classifier, target_classes=row_classes)
        if attack.compile is not None:
            if objective.evaluate not in attack.compiled_objectives:
                attack.compiled_objectives[objective.evaluate] = _CompiledOrEager(objective.evaluate, attack.compile)
            objective = dataclasses.replace(objective, evaluate=attack.compiled_objectives[objective.evaluate])
        return AttackProblem(x[n], Threat(radius[rows].to(device), attack.norm), objective, seeds[rows],
                             model, classifier, row_labels, row_targets, row_classes)

    with frozen_modules(*(m for m in (model, classifier) if m is not None)), \
            attack.over_image_set(model, x, radii, trials, seed, image_ids):
        x_adv = x[img_idx.to(device)].clone()
        values = torch.empty(total, device=device)
        histories = []
        zero_grad = torch.zeros(total, dtype=torch.bool)
        nan_grad = torch.zeros(total, dtype=torch.bool)
        attacked = torch.nonzero(radius > 0).flatten()

        def attack_chunk(chunk: torch.Tensor):
            problem = bind(chunk)
            result = attack.optimize(problem)
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

        def chunks(rows: torch.Tensor) -> list[torch.Tensor]:
            # Which rows share a call depends on the configuration only (attacks/chunking.py).
            return sweep_chunks(rows, lam_idx, img_idx, attack.batch_size, trials * attack.restarts, x.shape[1:])

        limit, halvings = run_in_chunks(chunks(attacked), attack_chunk, device)
        with torch.no_grad():
            limit, more = run_in_chunks(chunks(torch.arange(total)), evaluate_chunk, device, limit)
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
        pick = (values.argmax if attack.objective.maximize else values.argmin)(dim=2)  # (L, T, N)

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

            limit, more = run_in_chunks(chunks(clean_rows), evaluate_clean, device, limit)
            halvings += more
            clean = clean.view(trials, n_images)

        flags = []
        if attack.sanity_checks:
            flags = sanity_flags(attack, model, bind=bind, lambdas=radii, shape=shape, adv=adv,
                                 loss=loss, clean=clean, seed=seed, image_ids=image_ids,
                                 zero_gradient=zero_grad.view(shape), nan_gradient=nan_grad.view(shape))

    fallbacks = [c.failure for c in attack.compiled_objectives.values() if c.failure is not None]
    per_call = samples_per_call(attack.batch_size, x.shape[1:])
    config = {**attack.config(), "chunk_size": per_call if limit is None else min(limit, per_call),
              "images_per_chunk": images_per_chunk(attack.batch_size, trials * attack.restarts, x.shape[1:]),
              "chunk_halvings": halvings,
              "compile_fallback": fallbacks[0] if fallbacks else None,
              "lambdas": lambdas, "radii": radii, "trials": trials, "seed": int(seed),
              "image_ids": image_ids.tolist(), "device": str(device),
              "attack_loss": ("latent distance ||g(x+d) - g(x_t)||_2, lower = stronger"
                              if attack.objective.name == "latent" else
                              f"{attack.objective.name} objective, "
                              f"{'higher' if attack.objective.maximize else 'lower'} = stronger"),
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


def check_lambdas(lambdas) -> list[float]:
    values = [float(lambdas)] if isinstance(lambdas, (int, float)) else [float(v) for v in lambdas]
    if not values:
        raise AerobustError("give at least one lambda (attack radius)")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise AerobustError(f"every lambda must be a finite number >= 0, got {values}")
    return values


def check_images(x: torch.Tensor, model) -> torch.Tensor:
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


def check_ids(image_ids, n: int) -> torch.Tensor:
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
                   pool_size: int | None = None, pool_positions: torch.Tensor | None = None) -> torch.Tensor:
    """Indices ``(trials, N)`` into a pool of target images, one per (trial, image), reproducibly.

    With labels, each target has another class than its image; the pool is the attacked images
    themselves unless ``pool_labels`` (or, without labels, ``pool_size``) describes another pool.
    Without labels the target is a random other image: ``pool_positions`` (N,) says where each attacked
    image sits in another pool, and a draw of the image itself is drawn again (the same generator, so
    every other choice is the one drawn before this rule existed). Each choice depends only on
    ``(seed, trial, image_id)``.
    """
    if labels is None and image_ids is None:
        raise AerobustError("choose_targets needs labels or image_ids to know the number of images")
    n_images = len(labels) if labels is not None else len(image_ids)
    ids = check_ids(image_ids, n_images).tolist()
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
        if size < (2 if same_pool or pool_positions is not None else 1):
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
                pick = int(torch.randint(size, (1,), generator=generator))
                # Its own code as the target: the attack would start at its optimum and mean nothing.
                while pool_positions is not None and pick == int(pool_positions[n]):
                    pick = int(torch.randint(size, (1,), generator=generator))
                chosen[t, n] = pick
    return chosen
