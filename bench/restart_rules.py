"""Which stopping and restart rules buy PGD 200x3's strength cheaply: exact replays of recorded runs.

A rule that only ends a run earlier than the run would end by itself does not change the run up to
that point. So one recorded run per (sample, start) answers every such rule exactly, without running
it: this bench records each start's objective value at every step, with generous settings, and
replays the rules on the recordings.

* Recorded: the three models of ``apgd_strength.py`` (trained the same way), --images MNIST test
  images, the latent, maximum-damage and latent-classifier attacks at lambda 1, 3 and 5 (L2), trial 0.
  Each start is one sweep with ``restarts=1`` and its own seed (--seed + start), so starts are
  independent draws as the engine's restarts are, though not the same draws. PGD records its 100
  cosine-scheduled steps; pgd-halving up to 200 steps and 3 halvings (patience 4, rtol 1e-4); pqn 96
  steps with a patience of 12.
* Replayed rules:
  - the run's own end, made earlier: PGD's and pqn's early stopping (rtol 1e-4, patience 4-24 and
    3-12); pgd-halving ending at its first, second, third or fourth stall (halvings 0-3); a step cap
    (not for PGD, whose schedule depends on its step count);
  - starts: 1 to --starts random starts of each sample run side by side (the engine's restarts);
  - racing: from step k0 on, a start whose best loss trails the sample's best over all its starts by
    more than a margin (relative) is ended; a start that has ended keeps its best.
* Cost: evaluations per attacked sample as the optimizers count them (PGD and pgd-halving: one per
  step, plus the final point when a run reaches the cap; pqn: the start and one per step). The attack's real
  default runs too, counted by the encoder hook of ``counted_sweep``, beside its replayed count: the
  difference is the sweep's own evaluations around the optimizer (the objective's reference codes and
  each start's final evaluation), the same for every rule with as many starts.
* Strength: per sample the loss of the best start against PGD 200x3's on the same images and targets
  (>= 1: at least as strong); where both losses are below 1e-9 (both attacks did no damage, a collapsed
  model) the sample is a tie (ratio 1), counted in ``ties``.

Per attack and optimizer it prints the rules on the front of (mean evaluations over the attack's 9
cells of model x lambda, smallest 5th percentile over those cells) and finds the cheapest rule whose
smallest 5th percentile is >= 0.97, and the attack's default as a replayed rule (the optimizer it
defaults to). --csv writes every rule's summary. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time

import pandas
import torch

from aerobust.attacks.optimizers import EarlyStop
from aerobust.registry import ATTACKS
from apgd_strength import ATTACK_NAMES, bench_images, bench_models
from common import PLAIN_PGD, counted_sweep, strength_ratio

LAMBDAS = (1.0, 3.0, 5.0)
NO_DAMAGE = 1e-9
RECORDING = {"pgd": {**PLAIN_PGD, "steps": 100, "restarts": 1},
             "pgd-halving": {"optimizer": "pgd-halving", "steps": 200, "halvings": 3, "restarts": 1},
             "pqn": {"optimizer": "pqn", "steps": 96, "early_stop": 12, "early_stop_rtol": 1e-4, "restarts": 1}}
# the knob of the run's own end (PGD and pqn: early stopping's patience, None for none; pgd-halving:
# halvings) and the step caps replayed (PGD's cosine schedule depends on its step count: no caps)
OWN_END = {"pgd": (None, 4, 8, 12, 16, 24), "pgd-halving": (0, 1, 2, 3), "pqn": (3, 4, 5, 6, 8, 12)}
CAPS = {"pgd": (100,), "pgd-halving": (50, 100, 200), "pqn": (24, 32, 48, 64, 96)}
RACES = (None, (8, 0.01), (8, 0.1), (16, 0.01), (16, 0.1))


def stall_ends(minimized: torch.Tensor, patience: int, rtol: float, stalls: int) -> torch.Tensor:
    """The step at which each run's ``stalls``-th stall occurs (EarlyStop's rule; the last step if never).

    ``minimized``: (runs, steps) values of the minimized loss, NaN once a run has ended."""
    runs, steps = minimized.shape
    rule = EarlyStop(patience, rtol)
    best = torch.full((runs,), math.inf, dtype=torch.float64)
    anchor, stale, seen = best.clone(), torch.zeros(runs, dtype=torch.long), torch.zeros(runs, dtype=torch.long)
    end = torch.full((runs,), steps - 1, dtype=torch.long)
    for step in range(steps):
        value = minimized[:, step]
        alive = ~torch.isnan(value)
        best = torch.where(alive & (value < best), value, best)
        new_anchor, new_stale, moving = rule.update(best, anchor, stale)
        stalled = alive & ~moving
        anchor = torch.where(alive, new_anchor, anchor)
        # a stall starts the count again (pgd-halving halves and goes on)
        stale = torch.where(alive, torch.where(stalled, 0, new_stale), stale)
        seen += stalled.long()
        end = torch.where(stalled & (seen == stalls) & (end == steps - 1), step, end)
    return end


def replay(minimized: torch.Tensor, ends: torch.Tensor, starts: int, race, last_step: int, final_at_cap: bool):
    """The best minimized loss over a sample's starts and its evaluations under one rule.

    ``minimized``: (starts recorded, samples, steps); ``ends``: (starts recorded, samples) each run's own end."""
    values, ends = minimized[:starts], ends[:starts].clamp(max=last_step).clone()
    # a run whose own end falls on the last step is counted as capped: at most one evaluation high
    capped = ends == last_step
    steps = torch.arange(values.shape[2])
    values = torch.where(steps <= ends[..., None], torch.nan_to_num(values, nan=math.inf), math.inf)
    best = values.cummin(dim=2).values
    if race is not None and starts > 1:
        first, margin = race
        for step in range(first, values.shape[2]):
            best_now = best[:, :, step]
            leader = best_now.min(0).values
            behind = (best_now > leader + margin * leader.abs()) & (ends > step)
            ends = torch.where(behind, step, ends)
            capped &= ~behind
            if not bool((ends > step).any()):
                break
    loss = best.gather(2, ends[..., None]).squeeze(2).min(0).values
    evaluations = (ends + 1 + (capped.long() if final_at_cap else 0)).sum(0).double()
    return loss, evaluations


def ratios(minimized_loss: torch.Tensor, reference: torch.Tensor, maximize: bool) -> tuple[torch.Tensor, int]:
    mine = -minimized_loss if maximize else minimized_loss
    ratio = strength_ratio(mine, reference, maximize)
    tie = (mine.abs() <= NO_DAMAGE) & (reference.abs() <= NO_DAMAGE)
    return torch.where(tie, torch.ones_like(ratio), ratio), int(tie.sum())


def record_cells(args):
    x, labels, targets = bench_images(args.images, args.seed)
    cells = []
    for label, model, head in bench_models(args.epochs, args.conv_epochs, args.seed):
        for name, lam in itertools.product(ATTACK_NAMES, LAMBDAS):
            def sweep(options, seed=args.seed):
                return counted_sweep(name, options, model, x, lam, labels, targets, head, seed)

            reference, _ = sweep({**PLAIN_PGD, "steps": 200, "restarts": 3})
            _, pgd100x2 = sweep({**PLAIN_PGD, "steps": 100, "restarts": 2})
            default, default_evaluations = sweep({})
            maximize = reference.maximize
            recorded = {}
            for family, options in RECORDING.items():
                runs = [sweep(options, args.seed + start)[0].history.reshape(len(x), -1)
                        for start in range(args.starts)]
                recorded[family] = torch.stack(runs).double() * (-1.0 if maximize else 1.0)
            cells.append({"cell": f"{label}/{name}/{lam:g}", "attack": name, "maximize": maximize, "recorded": recorded,
                          "reference": reference.attack_loss.flatten().double(),
                          "default": ATTACKS.create(name).config(),
                          "default_evaluations": default_evaluations, "pgd100x2_evaluations": pgd100x2})
            print("recorded", cells[-1]["cell"], flush=True)
    return cells


def rule_name(family, own_end, starts, race, cap):
    knob = "halvings" if family == "pgd-halving" else "early-stop patience"
    raced = "" if race is None else f", race after {race[0]} steps at margin {race[1]:g}"
    return f"{family}: {knob} {own_end}, cap {cap}, {starts} start{'s' if starts > 1 else ''}{raced}"


def evaluate_rules(cells, family, max_starts):
    own_ends = {}
    for cell in cells:
        recorded = cell["recorded"][family]
        flat = recorded.flatten(0, 1)
        for own_end in OWN_END[family]:
            # pgd-halving ends at its (halvings + 1)-th stall; PGD and pqn at their first, if they stop early
            if family == "pgd-halving":
                patience, stalls = 4, own_end + 1
            else:
                patience, stalls = (recorded.shape[2] + 1 if own_end is None else own_end), 1
            own_ends[cell["cell"], own_end] = stall_ends(flat, patience, 1e-4, stalls).view(recorded.shape[:2])
    rules = []
    for own_end, starts, race, cap in itertools.product(OWN_END[family], range(1, max_starts + 1), RACES,
                                                        CAPS[family]):
        if starts == 1 and race is not None:
            continue
        last_step = cap if family == "pqn" else cap - 1  # pqn's history starts with its start
        per_cell = {}
        for cell in cells:
            loss, evaluations = replay(cell["recorded"][family], own_ends[cell["cell"], own_end], starts, race,
                                       last_step, final_at_cap=family != "pqn")
            ratio, ties = ratios(loss, cell["reference"], cell["maximize"])
            per_cell[cell["cell"]] = {"evaluations": round(float(evaluations.mean()), 1),
                                      "median": round(float(ratio.median()), 4),
                                      "p05": round(float(ratio.quantile(0.05)), 4), "ties": ties}
        rules.append({"rule": rule_name(family, own_end, starts, race, cap),
                      "mean_evaluations": round(sum(c["evaluations"] for c in per_cell.values()) / len(per_cell), 1),
                      "min_median": min(c["median"] for c in per_cell.values()),
                      "min_p05": min(c["p05"] for c in per_cell.values()), "cells": per_cell})
    return rules


def the_default_rule(config: dict) -> tuple[str, str]:
    """An attack's default settings as (optimizer, replayed rule without racing)."""
    optimizer = config["optimizer"]
    own_end = config["halvings"] if optimizer == "pgd-halving" else config.get("early_stop")
    return optimizer, rule_name(optimizer, own_end, config["restarts"], None, config["steps"])


def front(rules):
    """Rules no cheaper rule beats on the smallest 5th percentile."""
    kept, strongest = [], -math.inf
    for rule in sorted(rules, key=lambda r: (r["mean_evaluations"], -r["min_p05"])):
        if rule["min_p05"] > strongest:
            kept.append(rule)
            strongest = rule["min_p05"]
    return kept


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--starts", type=int, default=4, help="random starts recorded per sample")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the MLP AE and the VAE")
    parser.add_argument("--conv-epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", help="write every rule's summary per attack to this CSV file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cells = record_cells(args)
    pgd100x2 = sum(c["pgd100x2_evaluations"] for c in cells) / len(cells)
    summary, replayed, table = {}, {}, []
    for name in ATTACK_NAMES:
        of_attack = [cell for cell in cells if cell["attack"] == name]
        default_family, default_rule = the_default_rule(of_attack[0]["default"])
        for family in RECORDING:
            rules = evaluate_rules(of_attack, family, args.starts)
            for rule in rules:
                replayed.setdefault(rule["rule"], {}).update(rule["cells"])
                table.append({"attack": name, **{k: rule[k] for k in ("rule", "mean_evaluations", "min_median",
                                                                      "min_p05")}})
            print(f"{name}, {family}: mean evaluations over the {len(of_attack)} cells, smallest median and 5th "
                  "percentile")
            for rule in front(rules):
                print(f"  {rule['mean_evaluations']:6.1f}  {rule['min_median']:.4f}  {rule['min_p05']:.4f}  "
                      f"{rule['rule']}")
            strong_enough = [r for r in rules if r["min_p05"] >= 0.97]
            cheapest = min(strong_enough, key=lambda r: r["mean_evaluations"]) if strong_enough else None
            summary.setdefault(name, {})[family] = {
                "front": [{k: r[k] for k in ("rule", "mean_evaluations", "min_median", "min_p05")}
                          for r in front(rules)],
                "cheapest_with_min_p05_0.97": cheapest}
            if family == default_family:
                summary[name]["default"] = next(r for r in rules if r["rule"] == default_rule)
                print(f"  default: {summary[name]['default']['mean_evaluations']:6.1f}  "
                      f"{summary[name]['default']['min_median']:.4f}  {summary[name]['default']['min_p05']:.4f}  "
                      f"{default_rule}")
    if args.csv:
        pandas.DataFrame(table).to_csv(args.csv, index=False)
    calibration = {}
    for cell in cells:
        _, rule = the_default_rule(cell["default"])
        calibration[cell["cell"]] = {"rule": rule, "counted": round(cell["default_evaluations"], 1),
                                     "replayed": replayed[rule][cell["cell"]]["evaluations"]}
    print(json.dumps({"bench": "restart_rules", "images": args.images, "starts_recorded": args.starts,
                      "lambdas": LAMBDAS, "recording": RECORDING, "threads": args.threads,
                      "load_average": os.getloadavg(), "seconds": round(time.perf_counter() - start, 1),
                      "evaluations_per_sample_pgd100x2": round(pgd100x2, 1),
                      "quarter_of_pgd100x2": round(pgd100x2 / 4, 1), "attacks": summary,
                      "default_counted_and_replayed": calibration}))


if __name__ == "__main__":
    main()
