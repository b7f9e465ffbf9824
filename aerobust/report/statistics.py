"""The numbers of every table: image-level means with 95 % intervals, in the layouts of the paper's tables.

The images are the independent units of an audit (its trials re-attack the same images with other
targets and starts), so every cell is the mean over all finite rows with a 95 % cluster-bootstrap
interval that resamples images, each carrying all of its trials (:func:`aerobust.stats.cluster_bootstrap`).
``n`` counts the images with a value and ``rows`` all images of the cell; the spread over trials
(std of the per-trial means, ddof=1) stays in the CSVs as ``trial_std``, labelled as such, since it
says how repeatable the attack is, not how certain the mean is. Non-finite values (NaN, inf) take no
part in a mean and are counted in ``nan_rows``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..stats import cluster_bootstrap
from .columns import (CLEAN_ATTACK, CLEAN_COLUMNS, FLOAT_COLUMNS, KNOWN_ATTACK_ORDER, METRICS_BY_COLUMN, STATISTICS, Metric)
from ..results import lambda_text


def cell_statistics(results: pd.DataFrame, column: str,
                    by: Sequence[str] = ("model", "attack", "lambda")) -> pd.DataFrame:
    """Per ``by`` group (in order of first appearance): mean, 95 % interval over images, counts, trial spread.

    Columns: mean, low, high (cluster bootstrap over images), n (images with a finite value), rows
    (images of the group), trial_std (std over trials of the per-trial image means; NaN for one
    trial), trials, nan_rows (rows without a finite value). A group without any value has mean NaN.
    """
    by = list(by)
    values = results[column].astype(float)
    frame = results[[*by, "trial", "image_id"]].assign(value=values.where(np.isfinite(values)))
    records = {}
    for key, group in frame.groupby(by, sort=False):
        finite = group["value"].notna()
        interval = cluster_bootstrap(group["value"].to_numpy(), group["image_id"].to_numpy())
        per_trial = group.groupby("trial", sort=False)["value"].mean()
        records[key] = {"mean": interval.mean, "low": interval.low, "high": interval.high,
                        "n": int(group.loc[finite, "image_id"].nunique()), "rows": int(group["image_id"].nunique()),
                        "trial_std": float(per_trial.std(ddof=1)) if per_trial.count() > 1 else float("nan"),
                        "trials": int(per_trial.count()), "nan_rows": int((~finite).sum())}
    index = pd.MultiIndex.from_tuples(list(records), names=by) if len(by) > 1 else \
        pd.Index([k[0] if isinstance(k, tuple) else k for k in records], name=by[0])
    return pd.DataFrame(list(records.values()), index=index,
                        columns=["mean", "low", "high", "n", "rows", "trial_std", "trials", "nan_rows"])


def _scaled(stats: pd.DataFrame, column: str) -> pd.DataFrame:
    """The STATISTICS columns, mean, interval and trial spread in the metric's display unit (percent for accuracies)."""
    stats = stats[list(STATISTICS)].copy()
    if METRICS_BY_COLUMN.get(column, Metric(column, column, column)).percent:
        stats[["mean", "low", "high", "trial_std"]] *= 100.0
    return stats


def ordered_attacks(results: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(results["attack"]))
    return [a for a in KNOWN_ATTACK_ORDER if a in present] + [a for a in present if a not in KNOWN_ATTACK_ORDER]


def has_values(results: pd.DataFrame, attack: str, column: str) -> bool:
    return bool(results.loc[results["attack"] == attack, column].notna().any())


def table1_metrics(results: pd.DataFrame, attack: str) -> list[str]:
    """The paper's two columns for an attack: targeted ones are scored against their target."""
    if has_values(results, attack, "msssim_target_advrecon"):
        return ["msssim_target_advrecon", "msssim_input_adv"]
    return ["msssim_recon_advrecon", "msssim_input_adv"]


def _wide(results: pd.DataFrame, cells: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Rows per model; columns (attack, metric column, lambda, statistic) for the (attack, column) cells."""
    models = list(dict.fromkeys(results["model"]))
    blocks = []
    for attack, column in cells:
        rows = results[results["attack"] == attack]
        stats = _scaled(cell_statistics(rows, column, by=("model", "lambda")), column)
        for lam in sorted(rows["lambda"].unique()):
            part = stats.xs(lam, level="lambda")
            part.columns = pd.MultiIndex.from_tuples([(attack, column, lambda_text(lam), s) for s in part.columns])
            blocks.append(part)
    if not blocks:
        return pd.DataFrame(index=pd.Index(models, name="model"))
    table = pd.concat(blocks, axis=1).reindex(models)
    table.index.name = "model"
    table.columns.names = ["attack", "metric", "lambda", "statistic"]
    return table


def clean_statistics(results: pd.DataFrame, column: str) -> pd.DataFrame:
    """A clean-behaviour column (one value per model, trial and image, repeated in every block) per model.

    Taken from the attacks that recorded it. When every trial audited the same images, the clean value
    of an image is the same in every trial: it is counted once per (model, image), and the cell has no
    trial spread (a spread over trials of one repeated number would be a zero that says nothing). Otherwise it is
    counted once per (model, trial, image) and averaged like any other column. Columns are
    ("clean", column, "", statistic).
    """
    recorded = [a for a in ordered_attacks(results) if has_values(results, a, column)]
    rows = results[results["attack"].isin(recorded)]
    if (rows.groupby(["model", "image_id"])[column].nunique(dropna=False) <= 1).all():
        rows = rows.drop_duplicates(["model", "image_id"]).assign(trial=0)
    else:
        rows = rows.drop_duplicates(["model", "trial", "image_id"])
    stats = _scaled(cell_statistics(rows, column, by=("model",)), column)
    stats.columns = pd.MultiIndex.from_tuples([(CLEAN_ATTACK, column, "", s) for s in stats.columns])
    return stats


def _with_clean(results: pd.DataFrame, clean_columns: Sequence[str], attacked: pd.DataFrame) -> pd.DataFrame:
    parts = [clean_statistics(results, c) for c in clean_columns if results[c].notna().any()]
    table = pd.concat([*parts, attacked], axis=1).reindex(attacked.index)
    table.index.name = "model"
    table.columns.names = ["attack", "metric", "lambda", "statistic"]
    return table


def table1_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 as numbers, with clean fidelity first: per model, per attack, MS-SSIM per lambda.

    The first column is the clean MS-SSIM(x, x̃) (fidelity: a robustness score means little when the
    model does not reconstruct its input). Targeted attacks (the latent-space attack) give
    MS-SSIM(x_t, x̃_a) and MS-SSIM(x, x_a); untargeted ones (maximum damage) MS-SSIM(x̃, x̃_a) and
    MS-SSIM(x, x_a). Columns are a MultiIndex (attack, metric, lambda, statistic in STATISTICS).
    """
    attacked = _wide(results, [(a, c) for a in ordered_attacks(results) for c in table1_metrics(results, a)])
    return _with_clean(results, ["msssim_input_recon"], attacked)


def fidelity_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Clean fidelity and code sensitivity per model: MS-SSIM(x, x̃), MSE(x, x̃), and per attack and lambda
    how far the attack moved the code in units of the code separation (the median distance between
    the codes of two audited images)."""
    attacked = _wide(results, [(a, "relative_code_shift") for a in ordered_attacks(results)
                               if has_values(results, a, "relative_code_shift")])
    return _with_clean(results, ["msssim_input_recon", "mse_input_recon"], attacked)


def table3_statistics(results: pd.DataFrame) -> pd.DataFrame | None:
    """The paper's Table 3: latent-classifier accuracy (%) clean and under every attack, per lambda.

    None when the audit had no latent classifier.
    """
    if results["clean_classifier_correct"].isna().all() and results["classifier_correct"].isna().all():
        return None
    attacked = _wide(results, [(a, "classifier_correct") for a in ordered_attacks(results)
                               if has_values(results, a, "classifier_correct")])
    return _with_clean(results, ["clean_classifier_correct"], attacked)


def summary_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Every metric that has values, per (model, attack, lambda): columns (metric, statistic)."""
    columns = [c for c in FLOAT_COLUMNS if results[c].notna().any() and c not in CLEAN_COLUMNS]
    parts = []
    for column in columns:
        stats = _scaled(cell_statistics(results, column), column)
        # A column an attack never records (a target metric of an untargeted attack) is blank, not "0 of n".
        recorded = results.groupby("attack")[column].apply(lambda v: bool(v.notna().any()))
        not_recorded = ~stats.index.get_level_values("attack").map(recorded).astype(bool)
        stats.loc[not_recorded, ["n", "rows"]] = 0
        stats.columns = pd.MultiIndex.from_tuples([(column, s) for s in stats.columns])
        parts.append(stats)
    table = pd.concat(parts, axis=1)
    table.columns.names = ["metric", "statistic"]
    model_rank = {m: i for i, m in enumerate(dict.fromkeys(results["model"]))}
    attack_rank = {a: i for i, a in enumerate(ordered_attacks(results))}
    order = sorted(range(len(table)), key=lambda i: (model_rank[table.index[i][0]], attack_rank[table.index[i][1]],
                                                     table.index[i][2]))
    return table.iloc[order]

