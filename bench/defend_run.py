"""The reference defend run: can an AE / a VAE protect a small CNN on MNIST, and do they flag odd inputs?

Trains a plain AE and a VAE (reference MLP 1024-200x4-10, aerobust.training.train) and a small CNN on the
mnist-5k train split (4,000 images, padded to 32x32), then runs purification (with the adaptive attack),
consistency detection, OOD detection and calibration on real MNIST test images, writing reports/defend/.

    .venv/bin/python bench/defend_run.py            # about 5-10 minutes on 2 CPU cores

The last line printed is one JSON object with the headline numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from aerobust.adapter import wrap
from aerobust.classifiers import accuracy
from aerobust.datasets import load_dataset
from aerobust.classifier_defense import AttackOptions, DefendConfig, config_record, prepare_classifier, run_defend
from aerobust.report.defend import write_defend_report
from aerobust.runtime import seed_everything
from aerobust.training import train

ROOT = Path(__file__).resolve().parents[1]
MNIST_TEST = ROOT.parent / "shared" / "data" / "mnist-test"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "reports" / "defend"))
    parser.add_argument("--ae-epochs", type=int, default=250)
    parser.add_argument("--vae-epochs", type=int, default=250)
    parser.add_argument("--classifier-epochs", type=int, default=20)
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--attack-images", type=int, default=200)
    parser.add_argument("--attacks", default="fgsm,pgd,cw,lbfgs,deepfool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is fastest for these small models on a busy 2-core machine")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    started = time.perf_counter()
    timings = {}

    train_set = load_dataset("mnist-5k", "train", pad_to=32)
    eval_set = load_dataset(f"idx:{MNIST_TEST}", "test", pad_to=32, limit=args.eval_images)

    tick = time.perf_counter()
    autoencoders, training = {}, {}
    for name, defense, arch, epochs in (("ae", "ae", "mlp-ae-32", args.ae_epochs),
                                        ("vae", "vae", "mlp-vae-32", args.vae_epochs)):
        result = train(defense, arch, train_set, epochs=epochs, batch_size=100, lr=1e-3, seed=args.seed,
                       device="cpu", quiet=True)
        autoencoders[name] = wrap(result.model, device="cpu")
        training[name] = {"defense": defense, "architecture": arch, "epochs": epochs, "lr": 1e-3,
                          "batch_size": 100, "final": result.history[-1]}
    timings["train_autoencoders_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    classifier, classifier_info = prepare_classifier("cnn", input_shape=(1, 32, 32), num_classes=10,
                                                     train_set=train_set, epochs=args.classifier_epochs,
                                                     seed=args.seed, device="cpu")
    timings["train_classifier_s"] = time.perf_counter() - tick
    classifier_accuracy = accuracy(classifier, eval_set.images, eval_set.labels)

    config = DefendConfig(attacks=tuple(args.attacks.split(",")), attack_images=args.attack_images,
                          linf_budgets=(0.05, 0.1, 0.2), l2_budgets=(1.0, 2.0, 3.0), seed=args.seed,
                          attack_options=AttackOptions())
    tick = time.perf_counter()
    results = run_defend(classifier, autoencoders, eval_set, fit_set=train_set, config=config, quiet=True)
    timings["analyses_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - started
    write_defend_report(
        results, args.out, command="python bench/defend_run.py " + " ".join(sys.argv[1:]), config=config_record(config),
        seed=args.seed, device="cpu", autoencoders=training, timings=timings,
        classifier={**classifier_info, "architecture": "SmallCNN(16, 32)", "eval_accuracy": classifier_accuracy},
        data={"train": "mnist-5k train (4,000, padded to 32)", "eval": f"MNIST test, first {len(eval_set)}, padded to 32"})

    purification = results.purification
    headline = {
        "classifier_accuracy": round(classifier_accuracy, 4),
        "purification": {f"{r.model}/{r.attack}/{r.budget:g}": [round(r.clean_acc, 3), round(r.adversarial_acc, 3),
                                                                round(r.purified_acc, 3), round(r.adaptive_acc, 3)]
                         for r in purification.itertuples()},
        "purification_columns": ["clean", "attacked", "purified", "adaptive"],
        "detection_max_auc": {f"{r.model}/{r.attack}/{r.budget:g}/{r.attack_target}":
                              round(max(r.auc_distinct_labels, r.auc_label_entropy, r.auc_softmax_entropy), 3)
                              for r in results.detection.itertuples()},
        "ood_auc": {f"{r.model}/{r.ood_set}": [round(r.auc_reconstruction_error, 3),
                                                round(r.auc_negative_prior_loglik, 3)]
                    for r in results.ood.itertuples()},
        "spearman_rho": {r.model: round(r.spearman_rho, 4) for r in results.calibration_stats.itertuples()},
        "notes": results.notes,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
