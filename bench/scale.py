"""How close batched PGD comes to the hardware on photograph-sized models: the roofline fraction.

Models: ``conv-ae-64x3`` built for 128 x 128 x 3 (untrained weights: timing only) and the
pretrained ``taef2`` (weights from ``--taef2-dir``, default ../shared/data/taef2). Images: the
photographs bundled with scikit-image, centre-cropped and resized to ``--size`` px.

For each model and attack (max-damage, eq. 13; latent, eq. 12): one sweep of ``--images`` x
``--trials`` samples, ``--steps`` steps of ``--optimizer`` (default PGD, whatever the attack's own
default), 1 restart, sanity checks off, timed after a warm-up;
``roofline_fraction`` = steps x (median time of one forward+backward of the same bound objective on
the same flat batch, measured just before the sweep) / sweep time, median over ``--repeats`` pairs;
on CPU in this process's CPU time (``time.process_time``, one thread: robust to other processes on a
shared machine), on a GPU in wall time with synchronisation; both series are printed. The sweep also pays for binding the objective, the random start,
the projection every step and the final evaluation: that is the overhead measured.
``startup_seconds`` (importing torch and aerobust, building the model, loading weights and data) is
reported separately. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

START = time.perf_counter()

import torch  # noqa: E402

from aerobust import ARCHITECTURES, wrap  # noqa: E402
from aerobust.attacks import choose_targets  # noqa: E402
from aerobust.datasets import load_dataset  # noqa: E402
from aerobust.registry import ATTACKS  # noqa: E402
from attack_speed import forward_backward_seconds  # noqa: E402
from common import MNIST_TEST, every_step  # noqa: E402

TAEF2_DIR = MNIST_TEST.parent / "taef2"
IMPORT_SECONDS = time.perf_counter() - START


def build(name: str, size: int, taef2_dir: str):
    if name == "taef2":
        return ARCHITECTURES.create("taef2", weights_dir=taef2_dir)
    torch.manual_seed(0)
    return ARCHITECTURES.create(name, input_shape=(3, size, size))


def bench_model(name: str, args) -> dict:
    start = time.perf_counter()
    photos = load_dataset("skimage", "test", resize=args.size)
    model = wrap(build(name, args.size, args.taef2_dir), input_shape=(3, args.size, args.size), device=args.device)
    x = photos.images[: args.images].to(model.device)
    startup = time.perf_counter() - start
    row = {"model": name, "startup_seconds": round(IMPORT_SECONDS + startup, 2),
           "import_seconds": round(IMPORT_SECONDS, 2), "model_and_data_seconds": round(startup, 2), "attacks": {}}
    for attack_name in args.attacks.split(","):
        kwargs = {}
        if attack_name == "latent":
            index = choose_targets(None, args.trials, 0, image_ids=torch.arange(len(photos)))[:, : args.images]
            kwargs["targets"] = photos.images[index].to(model.device)
        # the roofline fraction counts every step
        attack = ATTACKS.create(attack_name, optimizer=args.optimizer, steps=args.steps, restarts=1,
                                sanity_checks=False, **every_step(args.optimizer))
        flat_x = x.repeat(args.trials, 1, 1, 1)
        targets = kwargs["targets"].flatten(0, 1) if "targets" in kwargs else None
        objective = attack.objective.bind(model, flat_x, targets=targets)
        attack.sweep(model, x, [args.lam], args.trials, 0, **kwargs)  # warm-up (allocator, kernels)
        # On a shared machine the load drifts: each sweep is paired with a roofline measured right
        # before it, and the fraction is the median of the pairs. On CPU the fraction is also taken
        # in this process's CPU time, which other processes on the machine barely disturb.
        clocks = {"wall": time.perf_counter} if model.device.type != "cpu" else \
            {"wall": time.perf_counter, "cpu": time.process_time}
        fractions = {clock_name: [] for clock_name in clocks}
        sweeps, steps = [], []
        for _ in range(args.repeats):
            step = {clock_name: forward_backward_seconds(model, flat_x, objective, repeats=3, clock=clock)
                    for clock_name, clock in clocks.items()}
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            begin = {clock_name: clock() for clock_name, clock in clocks.items()}
            result = attack.sweep(model, x, [args.lam], args.trials, 0, **kwargs)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            for clock_name, clock in clocks.items():
                fractions[clock_name].append(args.steps * step[clock_name] / (clock() - begin[clock_name]))
            sweeps.append(time.perf_counter() - begin["wall"])
            steps.append(step["wall"])
        main_clock = "cpu" if "cpu" in clocks else "wall"
        row["attacks"][attack_name] = {
            "sweep_seconds": round(statistics.median(sweeps), 3),
            "forward_backward_seconds": round(statistics.median(steps), 4),
            "roofline_fraction": round(statistics.median(fractions[main_clock]), 3),
            "roofline_clock": main_clock,
            **{f"roofline_fraction_{name}_per_repeat": [round(f, 3) for f in values]
               for name, values in fractions.items()},
            "chunk_size": result.config["chunk_size"], "samples": int(flat_x.shape[0]),
            "mean_attack_loss": round(float(result.attack_loss.mean()), 4),
        }
        print(json.dumps({"model": name, "attack": attack_name, **row["attacks"][attack_name]}), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="conv-ae-64x3,taef2")
    parser.add_argument("--attacks", default="max-damage,latent")
    parser.add_argument("--size", type=int, default=128, help="image side in px (a multiple of 16)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--optimizer", default="pgd", help="every attack's optimizer (pgd, pqn, apgd)")
    parser.add_argument("--lam", type=float, default=1.0, help="absolute L2 radius")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (medians)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--taef2-dir", default=str(TAEF2_DIR))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench_model(name, args) for name in args.models.split(",")]
    fractions = {f"{row['model']}/{attack}": values["roofline_fraction"]
                 for row in rows for attack, values in row["attacks"].items()}
    print(json.dumps({
        "bench": "scale", "device": args.device, "threads": torch.get_num_threads(), "size": args.size,
        "images": args.images, "trials": args.trials, "optimizer": args.optimizer, "steps": args.steps,
        "lambda": args.lam,
        "repeats": args.repeats, "torch": torch.__version__,
        "roofline_clock": "process CPU time" if args.device == "cpu" else "wall time",
        "roofline_fraction": fractions, "min_roofline_fraction": min(fractions.values()),
        "startup_seconds": {row["model"]: row["startup_seconds"] for row in rows},
        "per_model": rows,
    }))


if __name__ == "__main__":
    main()
