"""Training-epoch time per torch thread count, on the machine as it is and with every core kept busy.

    python bench/threads_under_load.py [--epochs 2] [--rounds 2] [--load-threads N]

Why: torch's own default (one thread per core) makes each thread wait for the others at every
parallel region when the cores are shared, while one thread leaves an idle machine's other cores
unused. aerobust's default (``set_threads(None)``: usable cores minus the 1-minute load average, at
least 1) should match the best fixed count in both situations. Two phases: "as is" (nothing added)
and "loaded" (a background process multiplies matrices with ``--load-threads`` threads, default every
core, for the whole phase; the automatic choice is made after the load has run long enough to show
in the load average). In each phase the reference MLP (mlp-ae-32, plain AE, mnist-5k train, batch
100) trains ``--epochs`` epochs with 1 thread, with every core and with the automatic count,
alternating, ``--rounds`` times. Reported: median epoch time per candidate, the automatic choice
with the load it saw, and its time over the best fixed count's. The last output line is one JSON
object. "As is" is only an idle machine when nothing else runs: the load average is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from aerobust.datasets import load_dataset
from aerobust.runtime import compute_environment, set_threads, usable_cores
from aerobust.training import train

LOAD_SCRIPT = ("import torch; torch.set_num_threads({threads}); a = torch.randn(1024, 1024)\n"
               "while True: a = torch.tanh(a @ a)")


def phase(data, args, cores: int) -> dict:
    chosen = set_threads(None)
    choice = compute_environment()["thread_choice"]
    candidates = {"1": 1, str(cores): cores, "auto": chosen}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(args.rounds):
        for name, threads in candidates.items():
            set_threads(threads)
            result = train("ae", "mlp-ae-32", data, epochs=args.epochs, seed=0, device="cpu", quiet=True)
            epoch_times = [row["epoch_time_s"] for row in result.history]
            times[name] += epoch_times
            print(f"  round {round_index} {name} ({threads} thread(s)): "
                  f"{', '.join(f'{t:.2f}' for t in epoch_times)} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    best_fixed = min(medians["1"], medians[str(cores)])
    return {"auto_threads": chosen, "load_average_1min": choice.get("load_average_1min"),
            "median_epoch_s": {name: round(value, 3) for name, value in medians.items()},
            "auto_over_best_fixed": round(medians["auto"] / best_fixed, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load-threads", type=int, default=usable_cores())
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds the load runs before the automatic choice (the load average lags)")
    args = parser.parse_args()
    cores = usable_cores()
    data = load_dataset("mnist-5k", "train", pad_to=32)
    print("as is:", flush=True)
    as_is = phase(data, args, cores)
    load = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT.format(threads=args.load_threads)])
    try:
        time.sleep(args.settle)
        print("loaded:", flush=True)
        loaded = phase(data, args, cores)
    finally:
        load.kill()
        load.wait()
    print(json.dumps({"as_is": as_is, "loaded": loaded, "cores": cores, "load_threads": args.load_threads,
                      "epochs_per_candidate": args.epochs * args.rounds, "architecture": "mlp-ae-32",
                      "defense": "ae", "data": "mnist-5k train (4000 images, 32x32)", "device": "cpu",
                      "torch": torch.__version__, "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
