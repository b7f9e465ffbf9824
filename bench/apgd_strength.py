"""APGD against PGD: counted forward passes per attacked sample and per-sample loss vs PGD 200x3.

Three small models trained here with ``aerobust.training.train`` on mnist-5k (padded to 32) for
--epochs epochs (the conv AE --conv-epochs), seed --seed: mlp-ae-32 (plain MSE), conv-ae-32x3 on one channel (plain MSE) and
mlp-vae-32 (the vae defense). On --images shared MNIST test images at lambda --lam (L2), trial 0,
each of the latent, max-damage and latent-classifier attacks runs on the same images and targets with
every candidate (--candidate, repeatable; default APGD --apgd-steps x 1 restart), PGD 100x2 (the
maximum-damage default before pgd-halving) and PGD 200x3.

* evaluations: images passed through the model's encoder during the sweep (a forward pre-hook counts
  rows; each forward+backward step counts once), divided by the attacked samples. Sanity checks off.
* loss ratio: per sample, a candidate's loss against PGD 200x3's, oriented so that >= 1 means the
  candidate is at least as strong (max-damage maximizes, the other two minimize); median and 5th
  percentile.

Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from aerobust.adapter import wrap
from aerobust.attacks import choose_targets
from aerobust.classifiers import train_latent_classifier
from aerobust.datasets import load_dataset
from aerobust.training import train
from common import MNIST_TEST, PLAIN_PGD, counted_sweep, every_step, strength

MODELS = {"mlp-ae": ("ae", "mlp-ae-32", {}), "conv-ae": ("ae", "conv-ae-32x3", {"input_shape": (1, 32, 32)}),
          "mlp-vae": ("vae", "mlp-vae-32", {})}
ATTACK_NAMES = ("latent", "max-damage", "latent-classifier")


def bench_images(count: int, seed: int):
    """The first ``count`` shared MNIST test images (padded to 32), their labels and one target each."""
    pool = load_dataset(f"idx:{MNIST_TEST}", "test", pad_to=32)
    x, labels = pool.images[:count], pool.labels[:count]
    targets = pool.images[choose_targets(labels, 1, seed, pool_labels=pool.labels, image_ids=torch.arange(count),
                                         pool_size=len(pool))]
    return x, labels, targets


def bench_models(epochs: int, conv_epochs: int, seed: int):
    """(label, wrapped model, latent classifier head) for each of MODELS, trained here on mnist-5k."""
    data = load_dataset("mnist-5k", "train", pad_to=32)
    for label, (defense, arch, arch_kwargs) in MODELS.items():
        trained = train(defense, arch, data, epochs=conv_epochs if label == "conv-ae" else epochs, batch_size=128,
                        lr=1e-3, seed=seed, device="cpu", quiet=True, arch_kwargs=arch_kwargs)
        model = wrap(trained.model.eval(), device="cpu")
        yield label, model, train_latent_classifier(model, data.images, data.labels, seed=seed)


def parse_candidate(text: str) -> tuple[str, dict]:
    """``NAME=KEY:VALUE,...`` -> (NAME, options); values are ints, floats or words; the optimizer is PGD
    unless named; PGD and pqn run to their last step unless early_stop is named (the attacks' own
    defaults may stop early)."""
    name, _, items = text.partition("=")
    options = {"optimizer": "pgd"}
    for item in filter(None, items.split(",")):
        key, _, value = item.partition(":")
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                continue
        options[key] = value
    return name, {**every_step(options["optimizer"]), **options}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--lam", type=float, default=3.0)
    parser.add_argument("--apgd-steps", type=int, default=49)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the MLP AE and the VAE")
    parser.add_argument("--conv-epochs", type=int, default=8, help="training epochs of the conv AE (it "
                        "learns slower: after 2 epochs its output ignored the input)")
    parser.add_argument("--candidate", action="append", default=[], metavar="NAME=KEY:VALUE,...",
                        help="attack options of a candidate, e.g. pgd50=steps:50,restarts:1,early_stop:10 (the "
                        "optimizer is PGD unless optimizer:NAME says otherwise, whatever the attack's default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, labels, targets = bench_images(args.images, args.seed)
    candidates = dict(parse_candidate(text) for text in args.candidate) or {
        "apgd": {"optimizer": "apgd", "steps": args.apgd_steps, "restarts": 1}}
    runs = {**candidates, "pgd100x2": {**PLAIN_PGD, "steps": 100, "restarts": 2},
            "pgd200x3": {**PLAIN_PGD, "steps": 200, "restarts": 3}}
    out = {}
    start_all = time.perf_counter()
    for label, model, head in bench_models(args.epochs, args.conv_epochs, args.seed):
        print(label, "counting rows entering", next(m for m in model.modules() if not list(m.children())), flush=True)
        for name in ATTACK_NAMES:
            result, evaluations, seconds = {}, {}, {}
            for run, options in runs.items():
                start = time.perf_counter()
                result[run], evaluations[run] = counted_sweep(name, options, model, x, args.lam, labels, targets, head,
                                                              args.seed)
                seconds[run] = round(time.perf_counter() - start, 2)
            strong = result["pgd200x3"].attack_loss.flatten()
            out[f"{label}/{name}"] = {
                "evaluations_per_sample_pgd100x2": evaluations["pgd100x2"],
                "evaluations_per_sample_pgd200x3": evaluations["pgd200x3"], "seconds": seconds,
                **{candidate: {"evaluations_per_sample": evaluations[candidate],
                               **strength(result[candidate].attack_loss.flatten(), strong, result[candidate].maximize)}
                   for candidate in [*candidates, "pgd100x2"]}}
            print(label, name, json.dumps(out[f"{label}/{name}"]), flush=True)
    print(json.dumps({"bench": "apgd_strength", "images": args.images, "lambda": args.lam,
                      "candidates": candidates, "epochs": args.epochs,
                      "conv_epochs": args.conv_epochs, "threads": args.threads,
                      "load_average": os.getloadavg(), "seconds": round(time.perf_counter() - start_all, 1),
                      "results": out}))


if __name__ == "__main__":
    main()
