"""The full default audit protocol on the reference MLP AE: wall time vs the per-image legacy protocol.

Protocol: 100 MNIST test images (../shared/data/mnist-test, padded to 32) x 10 trials x lambda in
{1, 3, 5} x the latent-space, maximum-damage and latent-classifier attacks, one model (mlp-ae-32
trained here with plain MSE), batched across images and trials in each (attack, lambda) block.
The attack strength is the attacks' default (100 PGD steps x 2 restarts) unless --steps/--restarts
say otherwise (30 x 1 is the budget at which bench/attack_speed.py measured PGD to match the legacy
L-BFGS-B loss).

* seconds: the audit itself (attacks + metrics + results), measured; the report is timed apart.
* legacy_seconds_estimate: the same attacks with optimizer="lbfgs-legacy" (scipy L-BFGS-B per
  image) timed on --legacy-images images x 1 trial for every (attack, lambda) and scaled linearly
  to 100 x 10 samples.
* strength check: on --strength-images images (trial 0, lambda 1), the median attack loss of a
  much stronger PGD (200 steps x 3 restarts) relative to the default, oriented like
  attack_speed.py (<= 1 means the stronger attack found nothing better than the audit's).

Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from aerobust import save_checkpoint
from aerobust.attacks import choose_targets
from aerobust.audit import PAPER_ATTACKS, Audit, AuditConfig, ModelSpec
from aerobust.datasets import load_dataset
from aerobust.classifiers import train_latent_classifier
from aerobust.registry import ATTACKS
from aerobust.report import build_report
from common import MNIST_TEST, reference_ae


def per_sample_loss(name, options, model, x, labels, targets, head, seed):
    attack = ATTACKS.create(name, sanity_checks=False, **options)
    start = time.perf_counter()
    result = attack.sweep(model, x, [1.0], 1, seed, targets=targets if attack.needs_targets else None,
                          labels=labels, classifier=head if attack.needs_classifier else None,
                          image_ids=torch.arange(len(x)))
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, help="PGD steps (default: the attacks' default)")
    parser.add_argument("--restarts", type=int, help="PGD restarts (default: the attacks' default)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the audited AE")
    parser.add_argument("--legacy-images", type=int, default=5)
    parser.add_argument("--strength-images", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20 images x 2 trials (development)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, trials = (20, 2) if args.quick else (100, 10)
    lambdas = [1.0, 3.0, 5.0]
    options = {k: v for k, v in (("steps", args.steps), ("restarts", args.restarts)) if v is not None}
    strength = ATTACKS.create("max-damage", **options)

    work = Path(tempfile.mkdtemp(prefix="aerobust-audit-bench-"))
    model, trained = reference_ae(args.epochs, args.seed)
    checkpoint = save_checkpoint(work / "ae.pt", trained.model, architecture="mlp-ae-32", defense="ae")
    config = AuditConfig(models=[ModelSpec("AE", checkpoint=str(checkpoint))], data=f"idx:{MNIST_TEST}",
                         pad_to=32, lambdas=lambdas, images=images, trials=trials, seed=args.seed,
                         attack_options={a: dict(options) for a in PAPER_ATTACKS})
    start = time.perf_counter()
    results = Audit(config, work / "audit", device="cpu", quiet=True).run()
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    build_report(work / "audit")
    report_seconds = time.perf_counter() - start
    print(f"audit: {len(results)} rows in {seconds:.1f} s; report {report_seconds:.1f} s; folder {work / 'audit'}")

    pool = load_dataset(f"idx:{MNIST_TEST}", "test", pad_to=32)
    train = load_dataset(f"idx:{MNIST_TEST}", "train", pad_to=32)
    head = train_latent_classifier(model, train.images[:4000], train.labels[:4000], seed=args.seed)
    count = max(args.legacy_images, args.strength_images)
    x, labels = pool.images[:count], pool.labels[:count]
    targets = pool.images[choose_targets(labels, 1, args.seed, pool_labels=pool.labels,
                                         image_ids=torch.arange(count), pool_size=len(pool))]
    legacy_estimate, strength_ratio = 0.0, {}
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
        default, _ = per_sample_loss(name, options, model, x, labels, targets, head, args.seed)
        strong, _ = per_sample_loss(name, {"steps": 200, "restarts": 3}, model, x, labels, targets, head, args.seed)
        d, s = float(default.attack_loss.median()), float(strong.attack_loss.median())
        strength_ratio[name] = round(d / s if default.maximize else s / d, 4)
        print(f"{name}: legacy estimate {legacy_total:.1f} s; median loss default {d:.4f} vs 200x3 {s:.4f}")

    print(json.dumps({
        "bench": "audit_speed", "quick": args.quick, "model": "mlp-ae-32", "images": images, "trials": trials,
        "lambdas": lambdas, "attacks": list(PAPER_ATTACKS), "steps": strength.steps, "restarts": strength.restarts,
        "threads": args.threads, "rows": len(results), "seconds": round(seconds, 2),
        "report_seconds": round(report_seconds, 2), "legacy_seconds_estimate": round(legacy_estimate, 1),
        "legacy_subset": f"{args.legacy_images} images x 1 trial per (attack, lambda), scaled linearly",
        "speedup_vs_legacy": round(legacy_estimate / seconds, 1),
        "default_loss_over_200x3_loss": strength_ratio,
    }))


if __name__ == "__main__":
    main()
