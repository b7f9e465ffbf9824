"""The distortion-distortion curve of a targeted attack and the area under it (AUDDC).

After Gondim-Ribeiro et al. (2018), who plot input distortion against output distortion of the
latent attack. Here, per model, over the audit's budget grid (which must contain lambda = 0):

* x: the budget as a fraction of the largest one, ``lambda / lambda_max`` (the measured mean
  ``||x_a - x||`` is kept beside it in the curve table);
* y: the relative output distortion, the mean ``||x̃_a - x_t||`` (adversarial reconstruction to the
  target image) over the mean of the same distance at lambda = 0, where ``x̃_a`` is the clean
  reconstruction. y = 1 means the attack got nowhere; y -> 0 means it reached its target.

AUDDC is the trapezoid area under y over x in [0, 1]: about 1 for a model the attack cannot move,
near 0 for one it moves to the target with little budget. Higher = more robust. The means are over
every (trial, image) row of a budget; the row counts go with the curve.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .errors import AerobustError
from .registry import register_metric

OUTPUT_COLUMN = "l2_target_advrecon"
INPUT_COLUMN = "l2_delta"


def auddc(budgets: Sequence[float], output_distortion: Sequence[float]) -> float:
    """Area under the normalized distortion-distortion curve from one model's points.

    ``budgets`` must contain 0; ``output_distortion`` is the mean distance of the adversarial
    reconstruction to the target at each budget (any order). Returns the trapezoid area of
    ``output / output(0)`` over ``budget / max budget``.
    """
    budgets = np.asarray(budgets, dtype=float)
    outputs = np.asarray(output_distortion, dtype=float)
    if budgets.shape != outputs.shape or budgets.ndim != 1:
        raise AerobustError("auddc needs one output distortion per budget")
    if not np.any(budgets == 0) or budgets.max() <= 0 or not np.isfinite(outputs).all():
        raise AerobustError("AUDDC needs finite distortions at lambda = 0 and at least one lambda > 0; "
                            "add 0 to --lambdas (e.g. --lambdas 0,0.5,1,2,3)")
    baseline = outputs[budgets == 0].mean()
    if not baseline > 0:
        raise AerobustError("the clean reconstructions already sit on their targets (distance 0); AUDDC is undefined")
    order = np.argsort(budgets, kind="stable")
    x, y = budgets[order] / budgets.max(), outputs[order] / baseline
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def distortion_curves(results: pd.DataFrame, attack: str = "latent") -> pd.DataFrame:
    """Per model and budget of ``attack``: mean input and output distortion, relative output, rows.

    Empty when the attack was not audited, was untargeted, or lambda = 0 is missing from its grid.
    """
    rows = results[(results["attack"] == attack) & results[OUTPUT_COLUMN].notna()]
    columns = ["model", "attack", "lambda", "budget_fraction", "input_distortion", "output_distortion",
               "relative_output", "rows"]
    if rows.empty or not (rows["lambda"] == 0).any():
        return pd.DataFrame(columns=columns)
    grouped = rows.groupby(["model", "lambda"], sort=False)
    curve = pd.DataFrame({"input_distortion": grouped[INPUT_COLUMN].mean(),
                          "output_distortion": grouped[OUTPUT_COLUMN].mean(),
                          "rows": grouped[OUTPUT_COLUMN].count()}).reset_index()
    baseline = curve[curve["lambda"] == 0].set_index("model")["output_distortion"]
    curve["relative_output"] = curve["output_distortion"] / curve["model"].map(baseline)
    curve["budget_fraction"] = curve["lambda"] / curve["lambda"].max()
    curve["attack"] = attack
    return curve.sort_values(["model", "lambda"], kind="stable")[columns].reset_index(drop=True)


register_metric("auddc", auddc)


def auddc_table(results: pd.DataFrame, attack: str = "latent") -> pd.DataFrame:
    """AUDDC per model (from :func:`distortion_curves`), with the grid and row counts behind it."""
    curves = distortion_curves(results, attack)
    out = []
    for model, curve in curves.groupby("model", sort=False):
        out.append({"model": model, "attack": attack, "auddc": auddc(curve["lambda"], curve["output_distortion"]),
                    "lambdas": ", ".join(f"{v:g}" for v in curve["lambda"]), "rows": int(curve["rows"].sum())})
    return pd.DataFrame(out, columns=["model", "attack", "auddc", "lambdas", "rows"])
