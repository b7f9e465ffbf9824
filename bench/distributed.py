"""Speed-up of 2 torchrun ranks over 1 process for an audit and for a training epoch, same machine, same run.

    python bench/distributed.py [--images 20] [--trials 2] [--epochs 2] [--rounds 2] [--out DIR]

Audit: the reference MLP AE (mlp-ae-32, trained 5 epochs on mnist-5k) under the paper's three
attacks (PGD defaults) at lambda 1 and 3; ``aerobust audit`` in one process, then
``torchrun --standalone --nproc_per_node=2 -m aerobust audit`` with the same options; wall-clock
of each whole command (process start, classifier head, attacks, merge, report). The rows of the two
runs are compared (largest absolute difference printed), and so are the report's CSV tables.
Training: ``aerobust train --defense coupled-ks`` on mnist-5k (4,000 images, batch 100) for
``--epochs`` epochs, one process vs two ranks; the epoch time is the last epoch's ``epoch_time_s``
(the first is warm-up). One torch thread per process (``--threads 1``, OMP_NUM_THREADS=1) in both.
One and two processes alternate for ``--rounds`` rounds; the speed-ups compare the fastest runs
(the least disturbed on a shared machine; medians are printed too). The last output line is one
JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from common import reference_ae

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _timed(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return seconds


def _last_epoch_time(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return rows[-1]["epoch_time_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per run (the last one is timed)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating 1-process / 2-rank runs")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="aerobust-bench-dist-"))
    aerobust = ["-m", "aerobust", "--threads", "1"]
    torch.set_num_threads(1)  # the reference model is trained here, in this process

    _, trained = reference_ae(epochs=5, seed=0, out_dir=out / "ae")
    audit = ["audit", "--checkpoint", str(trained.checkpoint), "--data", "mnist-5k", "--pad", "32", "--images",
             str(args.images), "--trials", str(args.trials), "--lambdas", "1,3", "--device", "cpu", "--quiet"]
    train = ["train", "--defense", "coupled-ks", "--data", "mnist-5k", "--pad", "32", "--epochs", str(args.epochs),
             "--batch-size", "100", "--device", "cpu", "--quiet"]
    times = {key: [] for key in ("audit_one", "audit_two", "epoch_one", "epoch_two", "train_one", "train_two")}
    for round_index in range(args.rounds):
        for processes, launcher in (("one", [sys.executable]), ("two", TORCHRUN)):
            times[f"audit_{processes}"].append(
                _timed([*launcher, *aerobust, *audit, "--out", str(out / f"audit-{processes}-{round_index}")]))
        for processes, launcher in (("one", [sys.executable]), ("two", TORCHRUN)):
            run_dir = out / f"train-{processes}-{round_index}"
            times[f"train_{processes}"].append(_timed([*launcher, *aerobust, *train, "--out", str(run_dir)]))
            times[f"epoch_{processes}"].append(_last_epoch_time(run_dir))
        print(f"round {round_index}: " + ", ".join(f"{key} {values[-1]:.2f} s" for key, values in times.items()))
    one = pd.read_csv(out / "audit-one-0" / "results.csv")
    two = pd.read_csv(out / "audit-two-0" / "results.csv")
    numeric = one.select_dtypes("number").columns
    identical_keys = one.drop(columns=numeric).equals(two.drop(columns=numeric))
    max_diff = float((one[numeric] - two[numeric]).abs().max().max())
    tables = sorted(p.name for p in (out / "audit-one-0" / "report").glob("*.csv"))
    tables_identical = all(pd.read_csv(out / "audit-one-0" / "report" / name).equals(
        pd.read_csv(out / "audit-two-0" / "report" / name)) for name in tables)
    fastest = {key: min(values) for key, values in times.items()}
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"audit ({len(one)} rows): largest row difference {max_diff:.3g}; report tables identical: "
          f"{tables_identical}; median speed-up {median['audit_one'] / median['audit_two']:.2f}, "
          f"training epoch median speed-up {median['epoch_one'] / median['epoch_two']:.2f}")
    print(json.dumps({
        "audit_one_process_s": round(fastest["audit_one"], 2), "audit_two_ranks_s": round(fastest["audit_two"], 2),
        "audit_speedup": round(fastest["audit_one"] / fastest["audit_two"], 3),
        "audit_speedup_median": round(median["audit_one"] / median["audit_two"], 3), "audit_rows": len(one),
        "audit_rows_max_abs_diff": max_diff, "audit_keys_identical": bool(identical_keys),
        "audit_report_tables": len(tables), "audit_report_tables_identical": tables_identical,
        "train_epoch_one_process_s": round(fastest["epoch_one"], 3),
        "train_epoch_two_ranks_s": round(fastest["epoch_two"], 3),
        "train_epoch_speedup": round(fastest["epoch_one"] / fastest["epoch_two"], 3),
        "train_epoch_speedup_median": round(median["epoch_one"] / median["epoch_two"], 3),
        "train_command_one_process_s": round(fastest["train_one"], 2),
        "train_command_two_ranks_s": round(fastest["train_two"], 2), "rounds": args.rounds,
        "threads_per_process": 1, "backend": "gloo", "device": "cpu", "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "audit": {"model": "mlp-ae-32 (5 epochs, mnist-5k)", "data": "mnist-5k test, padded 32",
                  "images": args.images, "trials": args.trials, "lambdas": [1, 3],
                  "attacks": "latent, max-damage, latent-classifier (each at its default)"},
        "train": {"defense": "coupled-ks", "architecture": "mlp-ae-32", "data": "mnist-5k train (4000 images)",
                  "batch_size": 100, "epochs": args.epochs},
    }))


if __name__ == "__main__":
    main()
