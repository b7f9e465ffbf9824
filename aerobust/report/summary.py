"""The few sentences at the top of a report page: which model is most robust on which attack, at what fidelity.

Every number comes from the same statistics as the tables (mean over trials of per-trial means) and is
quoted with its count; models flagged ``degenerate-model`` take no part in a ranking and are named.
"""
from __future__ import annotations

import pandas as pd

from .columns import METRICS_BY_COLUMN, attack_title
from .results_io import lambda_text
from .statistics import clean_statistics, ordered_attacks, table1_metrics, trial_statistics


def _numbers(values) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def _count(stats: pd.DataFrame) -> str:
    counts = set(zip(stats["n"], stats["rows"]))
    if len(counts) == 1:
        n, rows = counts.pop()
        return f"n = {n} rows per cell" if n == rows else f"n = {n} of {rows} rows per cell"
    return f"n = {int(stats['n'].min())} to {int(stats['n'].max())} rows per cell"


def attack_sentence(results: pd.DataFrame, attack: str, excluded: list[str]) -> str | None:
    """Which model is most robust on ``attack`` at each lambda, by the Table-1 robustness metric."""
    column = table1_metrics(results, attack)[0]
    metric = METRICS_BY_COLUMN[column]
    rows = results[(results["attack"] == attack) & ~results["model"].isin(excluded)]
    if rows.empty or metric.direction is None:
        return None
    stats = trial_statistics(rows, column, by=("model", "lambda")).dropna(subset=["mean"])
    if stats.empty:
        return None
    means = stats["mean"].unstack("lambda")
    lambdas = list(means.columns)
    lam_text = ", ".join(lambda_text(lam) for lam in lambdas)
    how = f"{metric.text}, {metric.direction} is more robust"
    if len(means) == 1:
        model = means.index[0]
        return (f"On the {attack_title(attack)} only {model} was scored: {how}: {_numbers(means.loc[model])} "
                f"at λ = {lam_text} ({_count(stats)}).")
    best = means.idxmax() if metric.direction == "higher" else means.idxmin()
    if best.nunique() == 1:
        winner = best.iloc[0]
        others = "; ".join(f"{model} {_numbers(means.loc[model])}" for model in means.index if model != winner)
        return (f"On the {attack_title(attack)}, {winner} is the most robust at every λ ({lam_text}): {how}: "
                f"{_numbers(means.loc[winner])}, against {others} ({_count(stats)}).")
    per_lambda = "; ".join(f"λ = {lambda_text(lam)}: {best[lam]} ({means.loc[best[lam], lam]:.3f})" for lam in lambdas)
    return (f"On the {attack_title(attack)} the most robust model depends on λ ({how}): {per_lambda} "
            f"({_count(stats)}).")


def summary_sentences(results: pd.DataFrame, degenerate: list[str]) -> list[str]:
    """One sentence per attack, one on clean fidelity, one naming degenerate models."""
    sentences = [s for s in (attack_sentence(results, attack, degenerate) for attack in ordered_attacks(results)) if s]
    if results["msssim_input_recon"].notna().any():
        fidelity = clean_statistics(results, "msssim_input_recon")
        means = fidelity[("clean", "msssim_input_recon", "", "mean")]
        counts = fidelity[("clean", "msssim_input_recon", "", "n")]
        sentences.append("Clean fidelity, MS-SSIM(x, x̃) (higher is better): "
                         + "; ".join(f"{model} {mean:.3f} (n = {int(counts[model])})" for model, mean in means.items())
                         + ". A robustness score counts only next to the fidelity it was bought with.")
    if degenerate:
        sentences.append(f"Degenerate: {', '.join(degenerate)}: the reconstructions do not depend on the input, so "
                         "no attack can change them; these models take no part in the rankings above.")
    return sentences
