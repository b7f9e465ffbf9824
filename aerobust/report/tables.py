"""Statistics tables as files: "mean ± std (n=...)" cells in CSV, Markdown, LaTeX and HTML via the writer."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .columns import ATTACK_TITLES, METRICS_BY_COLUMN
from .results_io import lambda_text
from .writer import write_table

def _mean_std_text(mean: float, std: float, decimals: int, plus_minus: str, n=None, rows=None) -> str:
    count = "" if n is None or pd.isna(n) else (f" (n={int(n)})" if n == rows else f" (n={int(n)} of {int(rows)})")
    if pd.isna(mean):
        return "no finite value" + count if rows else ""
    if pd.isna(std):
        return f"{mean:.{decimals}f}{count}"
    return f"{mean:.{decimals}f}{plus_minus}{std:.{decimals}f}{count}"


def mean_std_strings(stats: pd.DataFrame, decimals: int = 3, plus_minus: str = " ± ") -> pd.DataFrame:
    """Collapse the last column level (mean|std, and n|rows where present) into "0.551 ± 0.020 (n=1000)"."""
    keys = list(dict.fromkeys(c[:-1] for c in stats.columns))

    def counts(key, name):
        return stats[(*key, name)] if (*key, name) in stats.columns else [None] * len(stats)

    data = {key: [_mean_std_text(m, s, decimals, plus_minus, n, r)
                  for m, s, n, r in zip(stats[(*key, "mean")], stats[(*key, "std")], counts(key, "n"),
                                        counts(key, "rows"))] for key in keys}
    table = pd.DataFrame(data, index=stats.index)
    if keys:
        table.columns = pd.MultiIndex.from_tuples(keys, names=stats.columns.names[:-1]) \
            if len(keys[0]) > 1 else pd.Index([k[0] for k in keys], name=stats.columns.names[0])
    return table


def _label(level: str, value: str, latex: bool) -> str:
    if level == "attack":
        text = ATTACK_TITLES.get(value, f"{value} attack") if value != "clean" else "no attack"
        return _latex_escape(text) if latex else text
    if level == "metric":
        metric = METRICS_BY_COLUMN.get(value)
        if metric is None:
            return _latex_escape(value) if latex else value
        return metric.latex if latex else metric.text
    if level == "lambda":
        if value == "":
            return ""
        return f"$\\lambda = {value}$" if latex else f"λ = {value}"
    return _latex_escape(str(value)) if latex else str(value)


def _latex_escape(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", str(text)).replace("~", r"\textasciitilde{}")


def _relabel(table: pd.DataFrame, latex: bool) -> pd.DataFrame:
    """Human column labels (metric names, "λ = 1"); LaTeX-safe ones and escaped row labels for .tex."""
    table = table.copy()
    names = list(table.columns.names)
    keys = [key if isinstance(key, tuple) else (key,) for key in table.columns]
    labels = [tuple(_label(level, value, latex) for level, value in zip(names, key)) for key in keys]
    table.columns = (pd.MultiIndex.from_tuples(labels) if len(names) > 1
                     else pd.Index([label[0] for label in labels]))
    if latex:
        escape = (lambda key: tuple(_latex_escape(v) for v in key)) if table.index.nlevels > 1 else _latex_escape
        table.index = table.index.map(escape)
    return table


def _flat_columns(table: pd.DataFrame, separator: str) -> pd.DataFrame:
    table = table.copy()
    if isinstance(table.columns, pd.MultiIndex):
        table.columns = [separator.join(str(part) for part in key if str(part)) for key in table.columns]
    return table


def _rows_as_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Human tables keep the model as row label and show the other row keys (attack, lambda) as columns."""
    if table.index.nlevels == 1:
        return table
    keys = table.index.to_frame(index=False)
    if "lambda" in keys:
        keys["lambda"] = keys["lambda"].map(lambda_text)
    flat = table.reset_index(drop=True)
    inner = keys.iloc[:, 1:]
    if isinstance(flat.columns, pd.MultiIndex):
        inner.columns = pd.MultiIndex.from_tuples([(name,) + ("",) * (flat.columns.nlevels - 1) for name in inner])
    merged = pd.concat([inner, flat], axis=1)
    merged.index = pd.Index(keys.iloc[:, 0], name=keys.columns[0])
    return merged


def write_statistics_table(stats: pd.DataFrame, out_dir, stem: str, decimals: int = 3) -> dict[str, Path]:
    """CSV with separate numeric mean/std columns; Markdown, LaTeX and HTML with "mean ± std" cells.

    CSV columns are named ``attack/metric/lambda/mean`` (levels joined by '/').
    """
    written = write_table(_flat_columns(stats, "/"), out_dir, stem, formats=("csv",))
    human = mean_std_strings(stats, decimals)
    plain = _relabel(human, latex=False)
    written.update(write_table(_rows_as_columns(_flat_columns(plain, ", ")), out_dir, stem, formats=("md",)))
    latex = _relabel(mean_std_strings(stats, decimals, r" $\pm$ "), latex=True)
    written.update(write_table(_rows_as_columns(latex), out_dir, stem, formats=("tex",)))
    written.update(write_table(_rows_as_columns(plain), out_dir, stem, formats=("html",)))
    return written

