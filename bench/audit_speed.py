"""The full default audit protocol on the reference MLP AE: wall time, counted cost and strength.

Protocol: 100 MNIST test images (../shared/data/mnist-test, padded to 32) x 10 trials x lambda in
{1, 3, 5} x the latent-space, maximum-damage and latent-classifier attacks, one model (mlp-ae-32
trained here with plain MSE), each (attack, lambda) block one sweep. The attacks run at their
defaults (maximum damage PGD 100 x 2 and the latent attack pqn, at most 96 x 1, both with early stopping; the
latent classifier pgd-halving, at most 100 steps x 2 restarts) unless
--steps/--restarts say otherwise; the threads are aerobust's default (the idle cores) unless --threads
says otherwise.

* seconds: the audit itself (attacks, sanity checks, metrics, results), measured; the report is
  timed apart. sanity_share: the part of it spent in the sanity checks (timed around them).
* evaluations_per_sample: per attack, images entering the encoder per attacked sample (one per
  forward+backward step, plus the final evaluation), counted on --strength-images images at
  lambda --strength-lambda, trial 0, sanity checks off; the same for PGD 100 x 2
  (evaluations_per_sample_pgd100x2). Top level: the mean over the three attacks.
* loss_vs_pgd200x3 and loss_vs_pgd200x3_p05: per attack, the median and 5th percentile of the
  per-sample loss ratio against PGD 200 x 3 on the same images and targets (>= 1: at least as
  strong); top level: the smallest over the attacks.
* legacy_seconds_estimate: the same attacks with optimizer="lbfgs-legacy" (scipy L-BFGS-B per
  image) timed on --legacy-images images x 1 trial for every (attack, lambda) and scaled linearly
  to 100 x 10 samples.

Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

import aerobust.attacks.sweep as sweep_module
from aerobust import save_checkpoint
from aerobust.attacks import choose_targets
from aerobust.audit import PAPER_ATTACKS, Audit, AuditConfig, ModelSpec
from aerobust.datasets import load_dataset
from aerobust.classifiers import train_latent_classifier
from aerobust.registry import ATTACKS
from aerobust.report import build_report
from aerobust.runtime import compute_environment, set_threads
from common import MNIST_TEST, PLAIN_PGD, counted_sweep, reference_ae, strength


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, help="optimizer steps (default: each attack's default)")
    parser.add_argument("--restarts", type=int, help="restarts (default: each attack's default)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the audited AE")
    parser.add_argument("--legacy-images", type=int, default=5)
    parser.add_argument("--strength-images", type=int, default=50)
    parser.add_argument("--strength-lambda", type=float, default=3.0)
    parser.add_argument("--threads", type=int, help="torch threads (default: aerobust's, the idle cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20 images x 2 trials (development)")
    args = parser.parse_args()
    set_threads(args.threads)
    thread_choice = compute_environment()["thread_choice"]
    images, trials = (20, 2) if args.quick else (100, 10)
    lambdas = [1.0, 3.0, 5.0]
    options = {k: v for k, v in (("steps", args.steps), ("restarts", args.restarts)) if v is not None}

    work = Path(tempfile.mkdtemp(prefix="aerobust-audit-bench-"))
    model, trained = reference_ae(args.epochs, args.seed)
    checkpoint = save_checkpoint(work / "ae.pt", trained.model, architecture="mlp-ae-32", defense="ae")
    config = AuditConfig(models=[ModelSpec("AE", checkpoint=str(checkpoint))], data=f"idx:{MNIST_TEST}",
                         pad_to=32, lambdas=lambdas, images=images, trials=trials, seed=args.seed,
                         attack_options={a: dict(options) for a in PAPER_ATTACKS})
    sanity_seconds = [0.0]
    checks = sweep_module.sanity_flags

    def timed_checks(*positional, **keywords):
        start = time.perf_counter()
        try:
            return checks(*positional, **keywords)
        finally:
            sanity_seconds[0] += time.perf_counter() - start

    sweep_module.sanity_flags = timed_checks
    try:
        start = time.perf_counter()
        audit = Audit(config, work / "audit", device="cpu", quiet=True)
        results = audit.run()
        seconds = time.perf_counter() - start
    finally:
        sweep_module.sanity_flags = checks
    attack_settings = {name: attack.config() for name, attack in audit.attacks.items()}
    start = time.perf_counter()
    build_report(work / "audit")
    report_seconds = time.perf_counter() - start
    print(f"audit: {len(results)} rows in {seconds:.1f} s (sanity checks {sanity_seconds[0]:.1f} s); "
          f"report {report_seconds:.1f} s; folder {work / 'audit'}")

    pool = load_dataset(f"idx:{MNIST_TEST}", "test", pad_to=32)
    train = load_dataset(f"idx:{MNIST_TEST}", "train", pad_to=32)
    head = train_latent_classifier(model, train.images[:4000], train.labels[:4000], seed=args.seed)
    count = max(args.legacy_images, args.strength_images)
    x, labels = pool.images[:count], pool.labels[:count]
    targets = pool.images[choose_targets(labels, 1, args.seed, pool_labels=pool.labels,
                                         image_ids=torch.arange(count), pool_size=len(pool))]
    legacy_estimate, per_attack = 0.0, {}
    for name in PAPER_ATTACKS:
        legacy_total = 0.0
        for lam in lambdas:
            attack = ATTACKS.create(name, optimizer="lbfgs-legacy", sanity_checks=False)
            n = args.legacy_images
            start = time.perf_counter()
            attack.sweep(model, x[:n], [lam], 1, args.seed, targets=targets[:, :n] if attack.needs_targets else None,
                         labels=labels[:n], classifier=head if attack.needs_classifier else None,
                         image_ids=torch.arange(n))
            legacy_total += (time.perf_counter() - start) / n * images * trials
        legacy_estimate += legacy_total
        runs = {"default": options, "pgd100x2": {**PLAIN_PGD, "steps": 100, "restarts": 2},
                "pgd200x3": {**PLAIN_PGD, "steps": 200, "restarts": 3}}
        k = args.strength_images
        swept = {run: counted_sweep(name, run_options, model, x[:k], args.strength_lambda, labels[:k], targets[:, :k],
                                    head, args.seed)
                 for run, run_options in runs.items()}
        default, strong = swept["default"][0], swept["pgd200x3"][0]
        per_attack[name] = {"evaluations_per_sample": swept["default"][1],
                            "evaluations_per_sample_pgd100x2": swept["pgd100x2"][1],
                            **strength(default.attack_loss.flatten(), strong.attack_loss.flatten(), default.maximize),
                            "legacy_seconds_estimate": round(legacy_total, 1)}
        print(name, json.dumps(per_attack[name]), flush=True)

    lowest = lambda key: min(v[key] for v in per_attack.values() if v[key] is not None)  # noqa: E731
    print(json.dumps({
        "bench": "audit_speed", "quick": args.quick, "model": "mlp-ae-32", "images": images, "trials": trials,
        "lambdas": lambdas, "attacks": list(PAPER_ATTACKS), "attack_settings": attack_settings,
        "threads": torch.get_num_threads(), "thread_choice": thread_choice, "load_average": os.getloadavg(),
        "rows": len(results), "seconds": round(seconds, 2), "sanity_seconds": round(sanity_seconds[0], 2),
        "sanity_share": round(sanity_seconds[0] / seconds, 3), "report_seconds": round(report_seconds, 2),
        "evaluations_per_sample": round(sum(v["evaluations_per_sample"] for v in per_attack.values()) / 3, 1),
        "evaluations_per_sample_pgd100x2": round(
            sum(v["evaluations_per_sample_pgd100x2"] for v in per_attack.values()) / 3, 1),
        "loss_vs_pgd200x3": lowest("loss_vs_pgd200x3"), "loss_vs_pgd200x3_p05": lowest("loss_vs_pgd200x3_p05"),
        "strength_images": args.strength_images, "strength_lambda": args.strength_lambda,
        "legacy_seconds_estimate": round(legacy_estimate, 1),
        "legacy_subset": f"{args.legacy_images} images x 1 trial per (attack, lambda), scaled linearly",
        "speedup_vs_legacy": round(legacy_estimate / seconds, 1), "per_attack": per_attack,
    }))


if __name__ == "__main__":
    main()
