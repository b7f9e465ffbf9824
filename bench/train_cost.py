"""Epoch time of the coupled two-point KS defense over GMM-DAE, same data, same architecture, same run.

    python bench/train_cost.py [--epochs 3] [--rounds 2] [--threads 2]

Trains the reference MLP (mlp-ae-32) on mnist-5k (4,000 training images, padded to 32) with both
defenses, alternating, and compares the fastest epoch times (the first epoch of every run is dropped
as warm-up; the minimum is the least disturbed by other processes on a shared machine, the medians are
printed too). The last output line is one JSON object with ``coupled_over_gmmdae_epoch_time``
(target <= 2.0).
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from aerobust.datasets import load_dataset
from aerobust.training import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per defense")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist-5k", "train", pad_to=32)
    times: dict[str, list[float]] = {"gmm-dae": [], "coupled-ks": []}
    for round_index in range(args.rounds):
        for defense in times:
            result = train(defense, "mlp-ae-32", data, epochs=args.epochs, seed=round_index, device=args.device,
                           quiet=True)
            epoch_times = [row["epoch_time_s"] for row in result.history[1:]]
            times[defense] += epoch_times
            print(f"round {round_index} {defense}: epoch times {', '.join(f'{t:.3f}' for t in epoch_times)} s")
    gmm, coupled = min(times["gmm-dae"]), min(times["coupled-ks"])
    median_ratio = statistics.median(times["coupled-ks"]) / statistics.median(times["gmm-dae"])
    print(json.dumps({"gmmdae_epoch_s": round(gmm, 4), "coupled_epoch_s": round(coupled, 4),
                      "coupled_over_gmmdae_epoch_time": round(coupled / gmm, 3), "target": 2.0,
                      "median_ratio": round(median_ratio, 3),
                      "architecture": "mlp-ae-32", "data": "mnist-5k train (4000 images, 32x32)",
                      "batch_size": 100, "threads": args.threads, "device": args.device,
                      "epochs_timed_per_defense": len(times["gmm-dae"])}))


if __name__ == "__main__":
    main()
