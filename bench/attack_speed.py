"""Batched PGD vs the reference per-image L-BFGS-B protocol, and vs the forward+backward roofline.

Model: the reference MLP AE (mlp-ae-32: 1024-200x4-10), trained here for a few seeded epochs of
plain MSE on mnist-5k padded to 32 (untrained weights would make the attack meaningless).
Images: the first 100 MNIST test images (../shared/data/mnist-test, padded to 32) x 10 trials,
lambda = 1, the maximum-damage (eq. 13) and latent-space (eq. 12) attacks.

* PGD: one batched sweep (100 x 10 = 1,000 samples in one tensor pass; timed as the median of three
  sweeps after a warm-up), ``--steps`` steps
  (default 30: the smallest budget that reaches the legacy loss here; the attacks' own default,
  100 steps x 2 restarts, is for audits), 1 restart (the legacy protocol has one start too),
  sanity checks off (timing only).
* legacy: the same attack with optimizer="lbfgs-legacy" (scipy L-BFGS-B per image, m = 25,
  factr = 10), timed on the first ``--legacy-samples`` images of trial 0 and scaled linearly to
  1,000 samples; the loss comparison uses exactly those (image, trial) pairs, which share their
  start seeds with the PGD run.
* roofline: ``steps`` x the median time of one forward+backward of the objective on the same
  1,000-sample batch.

Last line: one JSON object. ``pgd_loss_over_legacy_loss`` is oriented so that <= 1.02 means PGD is
as strong or stronger (eq. 13: legacy median / PGD median; eq. 12: PGD median / legacy median).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from aerobust.attacks import choose_targets
from aerobust.datasets import load_dataset
from aerobust.registry import ATTACKS
from common import MNIST_TEST, PLAIN_PGD, reference_ae


def forward_backward_seconds(model, problem_x, objective, repeats: int, clock=time.perf_counter) -> float:
    """Median time (wall by default; ``clock`` may be e.g. time.process_time) of one objective
    forward+backward w.r.t. the input on the whole batch."""
    times = []
    with model.frozen():
        for _ in range(repeats + 1):
            start = clock()
            delta = torch.zeros_like(problem_x, requires_grad=True)
            values = objective.values(problem_x + delta)
            torch.autograd.grad(values.sum(), delta)
            if problem_x.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(clock() - start)
    return statistics.median(times[1:])


def bench_attack(name: str, model, test, args) -> dict:
    x, labels = test.images[: args.images].to(model.device), test.labels[: args.images]
    kwargs = {}
    if name == "latent":
        index = choose_targets(labels, args.trials, args.seed, pool_labels=test.labels)
        kwargs["targets"] = test.images[index].to(model.device)
    options = dict(restarts=1, sanity_checks=False)
    # PGD by name: the latent attack defaults to pqn.
    pgd = ATTACKS.create(name, **PLAIN_PGD, steps=args.steps, **options)
    # One warm-up sweep, then the median of three: a single cold sweep on a shared 2-core machine
    # varies by +-15%, while the roofline below is a median too.
    fast = pgd.sweep(model, x, [args.lam], args.trials, args.seed, **kwargs)
    sweep_times = []
    for _ in range(3):
        start = time.perf_counter()
        pgd.sweep(model, x, [args.lam], args.trials, args.seed, **kwargs)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        sweep_times.append(time.perf_counter() - start)
    pgd_seconds = statistics.median(sweep_times)

    # Roofline: the same flat batch the sweep attacked, its bound objective, one fwd+bwd each step.
    flat_x = x.repeat(args.trials, 1, 1, 1)
    objective = pgd.objective.bind(model, flat_x, targets=None if name != "latent" else kwargs["targets"].flatten(0, 1))
    roofline_seconds = args.steps * forward_backward_seconds(model, flat_x, objective, repeats=5)

    count = args.legacy_samples
    legacy_kwargs = {"targets": kwargs["targets"][:1, :count]} if name == "latent" else {}
    legacy = ATTACKS.create(name, optimizer="lbfgs-legacy", **options)
    start = time.perf_counter()
    slow = legacy.sweep(model, x[:count], [args.lam], 1, args.seed, image_ids=torch.arange(count), **legacy_kwargs)
    legacy_subset_seconds = time.perf_counter() - start
    legacy_seconds = legacy_subset_seconds * (args.images * args.trials) / count

    pgd_median = float(fast.attack_loss[0, 0, :count].median())
    legacy_median = float(slow.attack_loss[0, 0].median())
    ratio = legacy_median / pgd_median if pgd.objective.maximize else pgd_median / legacy_median
    return {
        "attack": name,
        "pgd_seconds": round(pgd_seconds, 3),
        "legacy_seconds_estimated": round(legacy_seconds, 2),
        "legacy_subset": f"{count} of {args.images * args.trials} samples timed ({legacy_subset_seconds:.2f} s), scaled linearly",
        "legacy_evaluations_median": int(torch.isfinite(slow.history[0, 0]).sum(dim=1).median()),
        "roofline_seconds": round(roofline_seconds, 3),
        "speedup_vs_legacy": round(legacy_seconds / pgd_seconds, 1),
        "roofline_fraction": round(roofline_seconds / pgd_seconds, 3),
        "pgd_median_loss": round(pgd_median, 5),
        "legacy_median_loss": round(legacy_median, 5),
        "pgd_loss_over_legacy_loss": round(ratio, 4),
        "pgd_mean_loss_all_samples": round(float(fast.attack_loss.mean()), 5),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run for development (fewer images, epochs)")
    parser.add_argument("--steps", type=int, default=30,
                        help="PGD steps (30 matches the legacy loss; audits default to 100 x 2 restarts)")
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attacks", default="max-damage,latent")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the attacks run (the model trains on the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.images, args.trials, args.legacy_samples, epochs = (20, 5, 4, 3) if args.quick else (100, 10, 25, 10)

    model, _ = reference_ae(epochs, args.seed, device=args.device)
    test = load_dataset(f"idx:{MNIST_TEST}", "test", pad_to=32, limit=1000)
    rows = []
    for name in args.attacks.split(","):
        row = bench_attack(name, model, test, args)
        rows.append(row)
        print(json.dumps(row))
    primary = rows[0]
    summary = {
        "bench": "attack_speed", "quick": args.quick, "model": "mlp-ae-32", "train_epochs": epochs,
        "images": args.images, "trials": args.trials, "lambda": args.lam, "steps": args.steps,
        "threads": args.threads, "device": str(model.device), "primary_attack": primary["attack"],
        "speedup_vs_legacy": primary["speedup_vs_legacy"],
        "roofline_fraction": primary["roofline_fraction"],
        "pgd_loss_over_legacy_loss": primary["pgd_loss_over_legacy_loss"],
        "per_attack": {row["attack"]: {k: row[k] for k in ("speedup_vs_legacy", "roofline_fraction",
                                                          "pgd_loss_over_legacy_loss")} for row in rows},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
