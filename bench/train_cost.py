"""Training cost per iteration of every defense against the coupled two-point KS defense (and GMM-DAE).

    python bench/train_cost.py [--epochs 4] [--rounds 2] [--threads 1] [--defenses gmm-dae,coupled-ks,...]

Trains the reference MLP (mlp-ae-32; mlp-vae-32 for the VAE family, mlp-vae-lipschitz-32 for
lipschitz-vae: the same 1024-200x4-10 widths) on mnist-5k (4,000 training images, padded to 32),
batch 100, every defense with its defaults, round-robin so that load from other processes spreads
over all of them. Every epoch has the same 40 steps, so epoch-time ratios are per-iteration ratios.
The first epoch of every run is dropped as warm-up; the minimum over the remaining epochs is the
least disturbed by other processes on a shared machine (the median ratios are printed too). The
reference paper says one smooth-encoder (SE) iteration costs about twice one of its method's. The
last output line is one JSON object with ``coupled_over_gmmdae_epoch_time`` (target <= 2.0) and
``smooth_encoder_over_coupled_epoch_time``.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from aerobust.datasets import load_dataset
from aerobust.training import train

ARCHITECTURE = {"vae": "mlp-vae-32", "beta-vae": "mlp-vae-32", "beta-tcvae": "mlp-vae-32",
                "smooth-encoder": "mlp-vae-32", "aave": "mlp-vae-32", "lipschitz-vae": "mlp-vae-lipschitz-32"}
DEFAULT_DEFENSES = ("gmm-dae", "coupled-ks", "smooth-encoder", "aave", "lipschitz-vae", "vae")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="round-robin runs per defense")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--defenses", default=",".join(DEFAULT_DEFENSES),
                        help="comma-separated; must include gmm-dae and coupled-ks")
    args = parser.parse_args()
    defenses = [d.strip() for d in args.defenses.split(",") if d.strip()]
    if not {"gmm-dae", "coupled-ks"} <= set(defenses):
        parser.error("--defenses must include gmm-dae and coupled-ks (the ratios' baselines)")
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist-5k", "train", pad_to=32)
    times: dict[str, list[float]] = {defense: [] for defense in defenses}
    for round_index in range(args.rounds):
        for defense in defenses:
            result = train(defense, ARCHITECTURE.get(defense, "mlp-ae-32"), data, epochs=args.epochs,
                           seed=round_index, device=args.device, quiet=True,
                           arch_kwargs={"input_shape": list(data.image_shape)})
            epoch_times = [row["epoch_time_s"] for row in result.history[1:]]
            times[defense] += epoch_times
            print(f"round {round_index} {defense}: epoch times {', '.join(f'{t:.3f}' for t in epoch_times)} s")
    fastest = {defense: min(values) for defense, values in times.items()}
    medians = {defense: statistics.median(values) for defense, values in times.items()}
    steps = len(data) // 100
    print(json.dumps({
        "coupled_over_gmmdae_epoch_time": round(fastest["coupled-ks"] / fastest["gmm-dae"], 3), "target": 2.0,
        **({"smooth_encoder_over_coupled_epoch_time": round(fastest["smooth-encoder"] / fastest["coupled-ks"], 3)}
           if "smooth-encoder" in fastest else {}),
        "over_coupled_min": {d: round(t / fastest["coupled-ks"], 3) for d, t in fastest.items()},
        "over_coupled_median": {d: round(t / medians["coupled-ks"], 3) for d, t in medians.items()},
        "iteration_ms_min": {d: round(1000 * t / steps, 2) for d, t in fastest.items()},
        "architectures": {d: ARCHITECTURE.get(d, "mlp-ae-32") for d in defenses},
        "data": "mnist-5k train (4000 images, 32x32)", "batch_size": 100, "steps_per_epoch": steps,
        "threads": args.threads, "device": args.device, "epochs_timed_per_defense": len(times[defenses[0]])}))


if __name__ == "__main__":
    main()
