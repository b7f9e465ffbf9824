"""The few sentences at the top of a report page: which model is more robust on which attack, at what fidelity.

Every comparative sentence is a verdict of :mod:`aerobust.verdicts` built from the report's own paired
tests (``paired_tests.csv``: sign-flip tests over images, Holm-corrected over that whole table) and
the 95 % interval of the paired difference; a model is called the most robust at a lambda only when it
is established against every other model there. Means are quoted with their 95 % cluster-bootstrap
interval over images, and the counts are images. Models flagged ``degenerate-model`` take no part in
a ranking and are named.
"""
from __future__ import annotations

import pandas as pd

from ..stats import cluster_bootstrap
from ..verdicts import Fidelity, paired_verdict
from .columns import METRICS_BY_COLUMN, attack_title
from ..results import lambda_text
from .statistics import clean_statistics, ordered_attacks, table1_metrics

FIDELITY_NAME = "MS-SSIM(x, x̃)"


def _mean_text(rows: pd.DataFrame, column: str) -> str:
    interval = cluster_bootstrap(rows[column].to_numpy(dtype=float), rows["image_id"].to_numpy())
    return f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def _pair_row(paired: pd.DataFrame | None, attack: str, lam: float, column: str, first: str, second: str):
    """The paired-test row of (first, second), turned so that model_a is ``first``; None when not tested."""
    if paired is None or paired.empty:
        return None
    rows = paired[(paired["attack"] == attack) & (paired["lambda"] == lam) & (paired["metric"] == column)]
    for _, row in rows.iterrows():
        if (row["model_a"], row["model_b"]) == (first, second):
            return row.to_dict()
        if (row["model_a"], row["model_b"]) == (second, first):
            turned = row.to_dict()
            turned.update(model_a=first, model_b=second, difference=-row["difference"], ci_low=-row["ci_high"],
                          ci_high=-row["ci_low"])
            return turned
    return None


def lambda_sentence(results: pd.DataFrame, attack: str, lam: float, excluded: list[str],
                    paired: pd.DataFrame | None, fidelities: dict[str, Fidelity]) -> str | None:
    """At one lambda of one attack: the most robust model if the paired tests establish it, else what is not."""
    column = table1_metrics(results, attack)[0]
    metric = METRICS_BY_COLUMN[column]
    rows = results[(results["attack"] == attack) & (results["lambda"] == lam) & ~results["model"].isin(excluded)]
    rows = rows[rows[column].notna()]
    if rows.empty or metric.direction is None:
        return None
    higher = metric.direction == "higher"
    models = list(dict.fromkeys(rows["model"]))
    where = f"On the {attack_title(attack)} at λ = {lambda_text(lam)} ({metric.text}, {metric.direction} is more robust)"
    means = {model: _mean_text(rows[rows["model"] == model], column) for model in models}
    images = rows.groupby("model")["image_id"].nunique()
    quoted = "; ".join(f"{m} {means[m]}" for m in models)
    counts = (f"n = {int(images.iloc[0])} images per model" if images.nunique() == 1
              else "n = " + ", ".join(f"{m} {int(images[m])}" for m in models) + " images")
    scores = f"means with 95 % intervals over images: {quoted} ({counts})"
    if len(models) == 1:
        return f"{where} only {models[0]} was scored: {scores}."
    order = rows.groupby("model")[column].mean().sort_values(ascending=not higher)
    leader = order.index[0]
    verdicts = []
    for other in order.index[1:]:
        row = _pair_row(paired, attack, lam, column, leader, other)
        if row is not None:
            verdicts.append(paired_verdict(row, f"the {attack_title(attack)} at λ = {lambda_text(lam)}",
                                           higher_is_more_robust=higher, fidelities=fidelities))
    if len(verdicts) == len(models) - 1 and all(v.winner == leader for v in verdicts):
        weakest = min(verdicts, key=lambda v: v.low)
        return (f"{where}, {leader} is the most robust, established against every other model by the paired tests "
                f"(closest: {weakest.sentence().rstrip('.')}). Scores, {scores}.")
    unsettled = [v for v in verdicts if v.winner != leader]
    untested = len(models) - 1 - len(verdicts)
    parts = [v.sentence() for v in unsettled]
    if untested:
        parts.append(f"{untested} pair(s) with the highest-scoring model have no paired test")
    return (f"{where}, no model is established as the most robust: " + " ".join(parts) + f" Scores, {scores}.")


def summary_sentences(results: pd.DataFrame, degenerate: list[str], paired: pd.DataFrame | None = None) -> list[str]:
    """Per attack and lambda one verdict sentence, one sentence on clean fidelity, one naming degenerate models.

    ``paired``: the report's paired-test table (:func:`aerobust.stats.paired_comparisons`); without it
    (one model) no comparative sentence is written.
    """
    fidelities: dict[str, Fidelity] = {}
    sentences = []
    if results["msssim_input_recon"].notna().any():
        fidelity = clean_statistics(results, "msssim_input_recon")
        means = fidelity[("clean", "msssim_input_recon", "", "mean")]
        lows = fidelity[("clean", "msssim_input_recon", "", "low")]
        highs = fidelity[("clean", "msssim_input_recon", "", "high")]
        counts = fidelity[("clean", "msssim_input_recon", "", "n")]
        fidelities = {model: Fidelity(FIDELITY_NAME, float(mean)) for model, mean in means.items()}
        sentences.append(f"Clean fidelity, {FIDELITY_NAME} (higher is better; 95 % intervals over images): "
                         + "; ".join(f"{model} {mean:.3f} [{lows[model]:.3f}, {highs[model]:.3f}] "
                                     f"(n = {int(counts[model])} images)" for model, mean in means.items())
                         + ". A robustness score counts only next to the fidelity it was bought with.")
    for attack in ordered_attacks(results):
        for lam in sorted(results.loc[results["attack"] == attack, "lambda"].unique()):
            sentence = lambda_sentence(results, attack, lam, degenerate, paired, fidelities)
            if sentence:
                sentences.append(sentence)
    if degenerate:
        sentences.append(f"Degenerate: {', '.join(degenerate)}: the reconstructions do not depend on the input, so "
                         "no attack can change them; these models take no part in the rankings above.")
    return sentences
