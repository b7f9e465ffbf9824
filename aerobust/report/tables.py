"""Statistics tables as files: the paper's tables through the one writer, with labels, arrows and counts.

A statistics frame (from :mod:`.statistics`) has columns (attack, metric, lambda, statistic) or
(metric, statistic), statistic in mean / low / high / n / rows / trial_std / nan_rows. The CSV keeps
every number in its own column (``attack/metric/lambda/mean``); Markdown, LaTeX and HTML get
"mean [low, high]" cells (95 % interval over images; n counts images), readable
headers with ↑ / ↓ where a direction is better, and the counts (the shared one in the caption).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .columns import CLEAN_ATTACK, METRICS_BY_COLUMN, attack_title
from .statistics import ordered_attacks, table1_metrics
from .writer import Label, write_table

# Rows of the paper's ablation (Table 2), in its order: name patterns (lower case, letters only) and the row.
ABLATION_ROWS = (("gmmdae", 0), ("augmented", 1), ("ours", 2), ("coupledks", 2))
DIRECTION_MEANING = "better"


def header_labels(stats: pd.DataFrame) -> dict:
    """Labels of every raw header value of a statistics frame: attacks, metric columns, lambdas."""
    labels: dict = {"lambda": Label("λ", r"$\lambda$")}
    names = list(stats.columns.names)
    keys = [key if isinstance(key, tuple) else (key,) for key in stats.columns]
    for level, name in enumerate(names):
        for value in dict.fromkeys(key[level] for key in keys):
            if name == "attack":
                labels[value] = attack_title(value)
            elif name == "metric" and value in METRICS_BY_COLUMN:
                metric = METRICS_BY_COLUMN[value]
                labels[value] = Label(metric.text, metric.latex)
            elif name == "lambda" and value != "":
                labels[value] = Label(f"λ = {value}", f"$\\lambda = {value}$")
    return labels


def header_directions(stats: pd.DataFrame) -> dict:
    columns = {key[list(stats.columns.names).index("metric")] for key in stats.columns}
    return {c: METRICS_BY_COLUMN[c].direction for c in columns
            if c in METRICS_BY_COLUMN and METRICS_BY_COLUMN[c].direction}


def budget_note(manifest: dict | None) -> str:
    """What lambda measures, from the budgets the audit recorded per attack (absolute L2 before budgets existed)."""
    from ..threat import BUDGETS

    attacks = (manifest or {}).get("attacks") or {}
    budgets = {name: (settings or {}).get("budget") or "l2" for name, settings in attacks.items()} or {"": "l2"}
    texts = {name: BUDGETS[b][1] if b in BUDGETS else b for name, b in budgets.items()}
    if len(set(texts.values())) == 1:
        return f"λ: {next(iter(texts.values()))}."
    return "λ: " + "; ".join(f"{attack_title(name)}: {text}" for name, text in texts.items()) + "."


def spread_note(results: pd.DataFrame, manifest: dict | None = None) -> str:
    """What a "mean [low, high]" cell is, with the audit's counts, and what lambda measures."""
    return (f"Mean over {results['image_id'].nunique()} images x {results['trial'].nunique()} trials with its 95 % "
            f"interval over images (cluster bootstrap: the images are the independent units; clean columns: one "
            f"value per image). The spread over trials is in the CSV (trial_std). {budget_note(manifest)} "
            f"Better: more robust under attack, more faithful when clean.")


def _flat_columns(table: pd.DataFrame, separator: str) -> pd.DataFrame:
    table = table.copy()
    if isinstance(table.columns, pd.MultiIndex):
        table.columns = [separator.join(str(part) for part in key if str(part)) for key in table.columns]
    return table


def write_statistics_table(stats: pd.DataFrame, out_dir, stem: str, decimals: int = 3,
                           caption: str | None = None) -> dict[str, Path]:
    """CSV with separate numeric columns (``attack/metric/lambda/mean``); Markdown, LaTeX and HTML via the writer."""
    written = write_table(_flat_columns(stats, "/"), out_dir, stem, formats=("csv",))
    written.update(write_table(stats, out_dir, stem, formats=("md", "tex", "html"), float_format=f"{{:.{decimals}f}}",
                               caption=caption, labels=header_labels(stats), directions=header_directions(stats),
                               direction_meaning=DIRECTION_MEANING, count_unit="images"))
    return written


def attack_panels(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A table with an attack column level (Table 1, Table 3) cut into one table per attack, the clean
    columns first in each: each fits a paper's text width, where all attacks side by side do not."""
    attacks = [a for a in dict.fromkeys(table.columns.get_level_values("attack")) if a != CLEAN_ATTACK]
    clean = [c for c in table.columns if c[0] == CLEAN_ATTACK]
    return {attack: table[clean + [c for c in table.columns if c[0] == attack]] for attack in attacks}


def ablation_order(models) -> list[str] | None:
    """The models in the paper's ablation order when at least two of them are labelled as its rows
    (GMM-DAE, Augmented, Ours / coupled-KS); None otherwise."""
    ranked = {}
    for model in models:
        letters = re.sub("[^a-z]", "", str(model).lower())
        rank = next((row for pattern, row in ABLATION_ROWS if letters.startswith(pattern)), None)
        if rank is not None:
            ranked[model] = rank
    if len(set(ranked.values())) < 2:
        return None
    return sorted(ranked, key=lambda model: ranked[model])


def table2_statistics(table1: pd.DataFrame, results: pd.DataFrame, models=None) -> pd.DataFrame:
    """The paper's Table 2 layout: per attack only the robustness column (MS-SSIM of the adversarial
    reconstruction), clean fidelity last; rows ``models`` (default: all, in audit order)."""
    keep = [c for attack in ordered_attacks(results) for c in table1.columns
            if c[0] == attack and c[1] == table1_metrics(results, attack)[0]]
    keep += [c for c in table1.columns if c[0] == CLEAN_ATTACK]
    return table1.loc[list(models) if models is not None else table1.index, keep]

