"""Training-epoch time per torch thread count while another process keeps every core busy.

    python bench/threads_under_load.py [--threads 1,2] [--epochs 2] [--load-threads N]

Why: on a machine whose cores are shared, torch's default (one thread per core) can make each
thread wait for the others at every parallel region; this picks the default of ``--threads``.
A background process multiplies matrices with ``--load-threads`` threads (default: every core) for
the whole run; meanwhile the reference MLP (mlp-ae-32, plain AE, mnist-5k train, batch 100) trains
``--epochs`` epochs with each candidate count, alternating, twice. Reported: the median epoch time
per candidate and its ratio to one thread. The last output line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

from aerobust.datasets import load_dataset
from aerobust.training import train

LOAD_SCRIPT = ("import torch; torch.set_num_threads({threads}); a = torch.randn(1024, 1024)\n"
               "while True: a = torch.tanh(a @ a)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="candidate thread counts, comma-separated")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load-threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    candidates = [int(t) for t in args.threads.split(",")]
    data = load_dataset("mnist-5k", "train", pad_to=32)
    load = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT.format(threads=args.load_threads)])
    times: dict[int, list[float]] = {t: [] for t in candidates}
    try:
        for round_index in range(args.rounds):
            for threads in candidates:
                torch.set_num_threads(threads)
                result = train("ae", "mlp-ae-32", data, epochs=args.epochs, seed=0, device="cpu", quiet=True)
                epoch_times = [row["epoch_time_s"] for row in result.history]
                times[threads] += epoch_times
                print(f"round {round_index} threads {threads}: epoch times "
                      f"{', '.join(f'{t:.2f}' for t in epoch_times)} s", flush=True)
    finally:
        load.kill()
        load.wait()
    medians = {t: statistics.median(v) for t, v in times.items()}
    print(json.dumps({"median_epoch_s": {str(t): round(m, 3) for t, m in medians.items()},
                      "over_one_thread": {str(t): round(m / medians[min(candidates)], 2) for t, m in medians.items()},
                      "epochs_per_candidate": args.epochs * args.rounds, "load_threads": args.load_threads,
                      "cores": os.cpu_count(), "architecture": "mlp-ae-32", "defense": "ae",
                      "data": "mnist-5k train (4000 images, 32x32)", "device": "cpu"}))


if __name__ == "__main__":
    main()
