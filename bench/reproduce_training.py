"""Short real training of GMM-DAE and the coupled two-point KS model on mnist-5k, with fidelity checks.

    python bench/reproduce_training.py [--epochs 200] [--ckpt-dir runs/reproduce_training] [--out reports/training]

Trains the reference MLP (mlp-ae-32: 1024-200x4-10, 10 modes, paper defaults) with ``gmm-dae`` and
``coupled-ks`` (coupling 0.9) on the 4,000 mnist-5k training images padded to 32 px, then measures on
the 1,000 mnist-5k test images:

* per-dimension Kolmogorov-Smirnov statistic of the test codes against the prior marginal CDF
  (``scipy.stats.kstest`` with the GMM marginal), mean and max over the 10 dimensions;
* reconstruction MSE (no latent noise);
* ``frechet_distance_small_classifier`` (features of a small CNN trained here on the training images;
  not FID) of 500 prior samples against one random half of the test images, next to the distance of
  the other half of the test images to it as the real-data floor (same sample sizes,
  both unseen by the classifier).

200 epochs of both models took about 2 minutes of training (50 s + 78 s of epoch time, one torch
thread on a shared 2-core CPU; the whole script 2.5 minutes), far inside a 10-minute budget; the paper
trains for 500 epochs on the full 60k MNIST.

Checkpoints go to ``--ckpt-dir`` (outside reports/, kept for auditing; rerunning resumes them);
tables, figures and manifest.json go to ``--out``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import torch

from aerobust.adapter import wrap
from aerobust.datasets import load_dataset
from aerobust.fidelity import (SmallClassifierFeatures, decode_codes, frechet_distance_small_classifier,
                               per_mode_samples)
from aerobust.report.fidelity import sample_grid_figure
from aerobust.report.training import history_figure
from aerobust.report.writer import save_figure, write_table
from aerobust.runtime import write_manifest
from aerobust.training import has_training_run, train

DEFENSES = ("gmm-dae", "coupled-ks")


def ks_per_dimension(codes: np.ndarray, prior) -> list:
    centers, std = prior.centers.double().numpy(), prior.std
    results = []
    for d in range(codes.shape[1]):
        def marginal_cdf(values, column=centers[:, d]):
            return np.mean([scipy.stats.norm.cdf(values, loc=c, scale=std) for c in column], axis=0)

        results.append(scipy.stats.kstest(codes[:, d], marginal_cdf))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--ckpt-dir", default="runs/reproduce_training")
    parser.add_argument("--out", default="reports/training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coupling", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest for this small MLP on a shared 2-core machine)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out, ckpt_dir = Path(args.out), Path(args.ckpt_dir)
    if ckpt_dir.resolve().is_relative_to(Path("reports").resolve()):
        parser.error("--ckpt-dir must lie outside reports/ (checkpoints are not committed)")

    train_set = load_dataset("mnist-5k", "train", pad_to=32)
    test_set = load_dataset("mnist-5k", "test", pad_to=32)
    results = {}
    for defense in DEFENSES:
        options = {"coupling": args.coupling} if defense == "coupled-ks" else {}
        results[defense] = train(defense, "mlp-ae-32", train_set, epochs=args.epochs, seed=args.seed,
                                 device=args.device, out_dir=ckpt_dir / defense,
                                 resume=has_training_run(ckpt_dir / defense), quiet=True, **options)
        print(f"{defense}: trained {args.epochs} epochs, last epoch {results[defense].history[-1]}")

    features = SmallClassifierFeatures(train_set.images, train_set.labels, epochs=5, seed=args.seed,
                                       device=args.device)
    # mnist-5k splits are sorted by class: halve the test set by a seeded permutation.
    order = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(args.seed))
    half = len(test_set) // 2
    reference = test_set.images[order[half:]]
    real_floor = frechet_distance_small_classifier(test_set.images[order[:half]], reference, features)
    summary, per_dimension = [], []
    for defense, result in results.items():
        model = wrap(result.model, device=args.device)
        prior = result.defense.prior.to("cpu")
        with torch.no_grad(), model.frozen():
            codes = model.encode(test_set.images.to(model.device)).cpu()
            rec_mse = float((model.decode(codes.to(model.device)).cpu() - test_set.images).pow(2).mean())
        ks = ks_per_dimension(codes.double().numpy(), prior)
        per_dimension += [{"model": defense, "dimension": d, "ks_statistic": r.statistic, "ks_pvalue": r.pvalue}
                          for d, r in enumerate(ks)]
        generator = torch.Generator().manual_seed(args.seed)
        generated = decode_codes(model, prior.sample(half, generator)[0])
        summary.append({
            "model": defense, "epochs": len(result.history),
            "test_reconstruction_mse": rec_mse,
            "ks_statistic_mean": float(np.mean([r.statistic for r in ks])),
            "ks_statistic_max": float(np.max([r.statistic for r in ks])),
            "frechet_distance_small_classifier": frechet_distance_small_classifier(generated, reference, features),
            "train_epoch_time_s_median": float(np.median([row["epoch_time_s"] for row in result.history])),
            "train_time_s_total": float(np.sum([row["epoch_time_s"] for row in result.history])),
        })
        rows = per_mode_samples(model, prior, 10, torch.Generator().manual_seed(args.seed))
        save_figure(sample_grid_figure(rows, [f"mode {k}" for k in range(prior.n_modes)],
                                       f"{defense}: 10 prior samples per mode"), out, f"samples_{defense}")
    summary_table = pd.DataFrame(summary)
    summary_table["frechet_distance_small_classifier_real_floor"] = real_floor
    write_table(summary_table, out, "summary")
    write_table(pd.DataFrame(per_dimension), out, "ks_per_dimension")
    save_figure(history_figure({k: pd.DataFrame(r.history) for k, r in results.items()}), out, "training_curves")
    write_manifest(out, command="python bench/reproduce_training.py", config=vars(args), seed=args.seed,
                   device=args.device, checkpoints={k: str(r.checkpoint) for k, r in results.items()},
                   train_data={"spec": "mnist-5k", "split": "train", "n": len(train_set), "pad_to": 32},
                   test_data={"spec": "mnist-5k", "split": "test", "n": len(test_set), "pad_to": 32},
                   defense_configs={k: r.defense.describe() for k, r in results.items()},
                   fidelity_metric="frechet_distance_small_classifier: Frechet distance of SmallCNN penultimate "
                                   "features (aerobust.classifiers, 5 epochs on the training images), 500 prior "
                                   "samples vs a seeded random half of the test images; not FID")
    print(summary_table.to_string(index=False))


if __name__ == "__main__":
    main()
