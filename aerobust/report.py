"""Reports: pure functions from a saved audit directory to tables, figures and one HTML page.

An audit directory holds ``results.csv`` (long format, one row per model, attack, lambda, trial and
image; columns in ``RESULT_COLUMNS``), ``manifest.json`` (``"metrics"``: the MS-SSIM settings,
``"config"``: the audit config) and optionally ``examples.npz`` (keys ``MODEL::ATTACK::LAMBDA``, each
``(K, 5, C, H, W)`` in [0, 1]: input, clean reconstruction, adversarial input, adversarial
reconstruction, target; the target is all-NaN for untargeted attacks). Nothing here runs a model.

Every "mean ± std" is taken over trials: the mean over images within a trial first, then the mean
and the sample standard deviation (ddof=1) of those trial means; one trial has no std. Non-finite
values (NaN, inf) take no part in a mean, and every cell says how many rows it averages: "(n=1000)",
or "(n=800 of 1000)" when some rows of its group hold no finite value.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import AerobustError
from .metrics import resolve_msssim_settings
from .reporting import save_figure, write_table
from .results import (CLEAN_COLUMNS, FLOAT_COLUMNS, INTEGER_COLUMNS, METRICS_BY_COLUMN, RESULT_COLUMNS,
                      SETTING_COLUMNS)
from .results import ResultMetric as Metric
from .results import lambda_text
from .runtime import write_manifest

LATENT_ATTACK = "latent"
MAX_DAMAGE_ATTACK = "max-damage"
CLASSIFIER_ATTACK = "latent-classifier"
KNOWN_ATTACK_ORDER = (LATENT_ATTACK, MAX_DAMAGE_ATTACK, CLASSIFIER_ATTACK)

# The results schema (columns, metric labels) lives in aerobust/results.py.
STATISTICS = ("mean", "std", "n", "rows")
EXAMPLE_COLUMNS = ("input x", "clean reconstruction", "adversarial x_a", "adversarial reconstruction",
                   "target x_t")

ATTACK_TITLES = {LATENT_ATTACK: "latent-space attack", MAX_DAMAGE_ATTACK: "maximum-damage attack",
                 CLASSIFIER_ATTACK: "latent-classifier attack"}


@dataclass
class AuditResults:
    """One audit directory, read: the results table, its manifest, and where the examples are."""

    directory: Path
    results: pd.DataFrame
    manifest: dict
    examples_path: Path | None = None
    _examples: dict | None = field(default=None, repr=False)

    @property
    def metric_settings(self) -> dict:
        return self.manifest.get("metrics") or {}

    def examples(self) -> dict[tuple[str, str, str], np.ndarray]:
        """``{(model, attack, lambda text): array (K, 5, C, H, W)}``; empty without examples.npz."""
        if self._examples is None:
            self._examples = {} if self.examples_path is None else read_examples(self.examples_path)
        return self._examples


def load_results(results_dir) -> AuditResults:
    """Read and check an audit directory; every problem is one AerobustError that says what to fix."""
    directory = Path(results_dir)
    if not directory.is_dir():
        raise AerobustError(f"results directory {directory} does not exist; pass the --out directory of "
                            f"an `aerobust audit` run")
    csv_path = directory / "results.csv"
    if not csv_path.is_file():
        raise AerobustError(f"{directory} has no results.csv; pass the --out directory of an `aerobust audit` run")
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise AerobustError(f"{directory} has no manifest.json, so the metric settings of its scores are "
                            f"unknown; rerun the audit")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AerobustError(f"{manifest_path} is not valid JSON ({exc}); rerun the audit") from None
    if not isinstance(manifest, dict):
        raise AerobustError(f"{manifest_path} must hold a JSON object; rerun the audit")
    examples_path = directory / "examples.npz"
    return AuditResults(directory, read_results_csv(csv_path), manifest,
                        examples_path if examples_path.is_file() else None)


def read_labelled_csv(path) -> pd.DataFrame:
    """A results CSV as written: only empty cells are missing (a model labelled "nan" or "NA" stays a label)."""
    return pd.read_csv(path, dtype={"model": str, "attack": str}, keep_default_na=False, na_values=[""])


def read_results_csv(path) -> pd.DataFrame:
    """Parse and type-check a results.csv written by the audit."""
    try:
        _check_complete_rows(path)
        frame = read_labelled_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise AerobustError(f"{path} is not a readable results CSV ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); rerun the audit") from None
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise AerobustError(f"{path} lacks the columns {', '.join(missing)}; it was not written by "
                            f"`aerobust audit` (or by an older version): rerun the audit")
    if frame.empty:
        raise AerobustError(f"{path} has no rows; the audit wrote nothing, rerun it")
    for column in ("model", "attack"):
        if frame[column].isna().any():
            raise AerobustError(f"{path}: column {column} has empty cells; rerun the audit")
    for column in ("lambda", *SETTING_COLUMNS, *FLOAT_COLUMNS, *INTEGER_COLUMNS):
        converted = pd.to_numeric(frame[column], errors="coerce")
        if (converted.isna() & frame[column].notna()).any():
            bad = frame.loc[converted.isna() & frame[column].notna(), column].iloc[0]
            raise AerobustError(f"{path}: column {column} holds a non-number ({bad!r}); rerun the audit")
        frame[column] = converted
    for column in ("lambda", "trial", "image_id"):
        if frame[column].isna().any():
            raise AerobustError(f"{path}: column {column} has empty cells; rerun the audit")
    frame[list(INTEGER_COLUMNS)] = frame[list(INTEGER_COLUMNS)].fillna(-1).astype("int64")
    frame["lambda"] = frame["lambda"].astype(float)
    return frame


def _check_complete_rows(path):
    """pandas pads a row that was cut short with empty cells, which would pass for metrics not measured."""
    text = Path(path).read_text()
    if text and not text.endswith("\n"):
        raise AerobustError(f"{path} ends in the middle of a row (the file was cut short); rerun the audit")
    rows = csv.reader(io.StringIO(text))
    header = next(rows, [])
    for line, row in enumerate(rows, start=2):
        if row and len(row) != len(header):
            raise AerobustError(f"{path}: line {line} has {len(row)} of {len(header)} fields (the file was cut or "
                                "edited); rerun the audit")


def read_examples(path) -> dict[tuple[str, str, str], np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AerobustError(f"{path} is not a readable .npz file ({exc}); rerun the audit") from None
    examples = {}
    with archive:
        for key in archive.files:
            parts = key.split("::")
            array = archive[key]
            if len(parts) != 3:
                raise AerobustError(f"{path}: key {key!r} is not MODEL::ATTACK::LAMBDA; rerun the audit")
            if array.ndim != 5 or array.shape[1] != len(EXAMPLE_COLUMNS) or array.shape[2] not in (1, 3):
                raise AerobustError(f"{path}: {key} has shape {array.shape}, expected (K, 5, C, H, W) with C 1 "
                                    f"or 3; rerun the audit")
            examples[(parts[0], parts[1], parts[2])] = array.astype(np.float32)
    return examples


# --- statistics -----------------------------------------------------------------------------------

def trial_statistics(results: pd.DataFrame, column: str,
                     by: Sequence[str] = ("model", "attack", "lambda")) -> pd.DataFrame:
    """Mean over images within each trial, then mean, std (ddof=1) and count of those trial means.

    Returns one row per ``by`` group (in order of first appearance) with columns mean, std, trials,
    n (the rows with a finite value, which the mean averages) and rows (all rows of the group).
    Non-finite cells (target metrics of untargeted attacks, NaN from a broken model) take no part in
    the mean and are the difference between n and rows; a group without any value has mean NaN.
    """
    by = list(by)
    values = results[column].astype(float)
    frame = results[[*by, "trial"]].assign(value=values.where(np.isfinite(values)))
    per_trial = frame.groupby([*by, "trial"], sort=False)["value"].mean()
    grouped = per_trial.groupby(level=by, sort=False)
    rows = frame.groupby(by, sort=False)["value"]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "trials": grouped.count(),
                         "n": rows.count(), "rows": rows.size()})


def _scaled(stats: pd.DataFrame, column: str) -> pd.DataFrame:
    """The STATISTICS columns, mean and std in the metric's display unit (percent for accuracies)."""
    stats = stats[list(STATISTICS)].copy()
    if METRICS_BY_COLUMN.get(column, Metric(column, column, column)).percent:
        stats[["mean", "std"]] *= 100.0
    return stats


def _ordered_attacks(results: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(results["attack"]))
    return [a for a in KNOWN_ATTACK_ORDER if a in present] + [a for a in present if a not in KNOWN_ATTACK_ORDER]


def _has_values(results: pd.DataFrame, attack: str, column: str) -> bool:
    return bool(results.loc[results["attack"] == attack, column].notna().any())


def _table1_metrics(results: pd.DataFrame, attack: str) -> list[str]:
    """The paper's two columns for an attack: targeted ones are scored against their target."""
    if _has_values(results, attack, "msssim_target_advrecon"):
        return ["msssim_target_advrecon", "msssim_input_adv"]
    return ["msssim_recon_advrecon", "msssim_input_adv"]


def _wide(results: pd.DataFrame, cells: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Rows per model; columns (attack, metric column, lambda, mean|std) for the (attack, column) cells."""
    models = list(dict.fromkeys(results["model"]))
    blocks = []
    for attack, column in cells:
        rows = results[results["attack"] == attack]
        stats = _scaled(trial_statistics(rows, column, by=("model", "lambda")), column)
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


def _clean_statistics(results: pd.DataFrame, column: str) -> pd.DataFrame:
    """A clean-behaviour column (one value per model, trial and image, repeated in every block) per model.

    Counted once per (model, trial, image), from the attacks that recorded it. Columns are
    ("clean", column, "", statistic).
    """
    recorded = [a for a in _ordered_attacks(results) if _has_values(results, a, column)]
    rows = results[results["attack"].isin(recorded)].drop_duplicates(["model", "trial", "image_id"])
    stats = _scaled(trial_statistics(rows, column, by=("model",)), column)
    stats.columns = pd.MultiIndex.from_tuples([("clean", column, "", s) for s in stats.columns])
    return stats


def _with_clean(results: pd.DataFrame, clean_columns: Sequence[str], attacked: pd.DataFrame) -> pd.DataFrame:
    parts = [_clean_statistics(results, c) for c in clean_columns if results[c].notna().any()]
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
    attacked = _wide(results, [(a, c) for a in _ordered_attacks(results) for c in _table1_metrics(results, a)])
    return _with_clean(results, ["msssim_input_recon"], attacked)


def fidelity_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Clean fidelity and code sensitivity per model: MS-SSIM(x, x̃), MSE(x, x̃), and per attack and lambda
    how far the attack moved the code in units of the code separation (the median distance between
    the codes of two audited images)."""
    attacked = _wide(results, [(a, "relative_code_shift") for a in _ordered_attacks(results)
                               if _has_values(results, a, "relative_code_shift")])
    return _with_clean(results, ["msssim_input_recon", "mse_input_recon"], attacked)


def table3_statistics(results: pd.DataFrame) -> pd.DataFrame | None:
    """The paper's Table 3: latent-classifier accuracy (%) clean and under every attack, per lambda.

    None when the audit had no latent classifier.
    """
    if results["clean_classifier_correct"].isna().all() and results["classifier_correct"].isna().all():
        return None
    attacked = _wide(results, [(a, "classifier_correct") for a in _ordered_attacks(results)
                               if _has_values(results, a, "classifier_correct")])
    return _with_clean(results, ["clean_classifier_correct"], attacked)


def summary_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Every metric that has values, per (model, attack, lambda): columns (metric, mean|std)."""
    columns = [c for c in FLOAT_COLUMNS if results[c].notna().any() and c not in CLEAN_COLUMNS]
    parts = []
    for column in columns:
        stats = _scaled(trial_statistics(results, column), column)
        # A column an attack never records (a target metric of an untargeted attack) is blank, not "0 of n".
        recorded = results.groupby("attack")[column].apply(lambda v: bool(v.notna().any()))
        not_recorded = ~stats.index.get_level_values("attack").map(recorded).astype(bool)
        stats.loc[not_recorded, ["n", "rows"]] = 0
        stats.columns = pd.MultiIndex.from_tuples([(column, s) for s in stats.columns])
        parts.append(stats)
    table = pd.concat(parts, axis=1)
    table.columns.names = ["metric", "statistic"]
    model_rank = {m: i for i, m in enumerate(dict.fromkeys(results["model"]))}
    attack_rank = {a: i for i, a in enumerate(_ordered_attacks(results))}
    order = sorted(range(len(table)), key=lambda i: (model_rank[table.index[i][0]], attack_rank[table.index[i][1]],
                                                     table.index[i][2]))
    return table.iloc[order]


# --- formatting -----------------------------------------------------------------------------------

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


# --- figures --------------------------------------------------------------------------------------

def _panel_per_attack(results: pd.DataFrame):
    """A figure with one titled panel per attack; returns (figure, [(axis, attack)])."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = _ordered_attacks(results)
    figure, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.4), squeeze=False)
    for axis, attack in zip(axes[0], attacks):
        axis.set_title(ATTACK_TITLES.get(attack, attack))
        axis.grid(alpha=0.3)
    return figure, list(zip(axes[0], attacks))


def _with_model_legend(figure, panels):
    handles, labels = panels[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5),
                      bbox_to_anchor=(0.5, 1.08), frameon=False)
    figure.tight_layout()
    return figure


def attack_loss_figure(results: pd.DataFrame):
    """Fig. 2: attack loss against lambda, one panel per attack, mean ± std over trials per model."""
    figure, panels = _panel_per_attack(results)
    stats = trial_statistics(results, "attack_loss").reset_index()
    for axis, attack in panels:
        for model in dict.fromkeys(results["model"]):
            rows = stats[(stats["attack"] == attack) & (stats["model"] == model)].sort_values("lambda")
            if rows.empty or rows["mean"].isna().all():
                continue
            line, = axis.plot(rows["lambda"], rows["mean"], marker="o", label=model)
            band = rows["std"].fillna(0.0)
            axis.fill_between(rows["lambda"], rows["mean"] - band, rows["mean"] + band,
                              color=line.get_color(), alpha=0.2)
        axis.set_xlabel("λ (L2 budget)")
        axis.set_ylabel("attack loss")
    return _with_model_legend(figure, panels)


def robustness_fidelity_figure(results: pd.DataFrame):
    """Robustness against clean fidelity: per attack, each model's Table-1 robustness score per lambda
    (y) at its clean MS-SSIM(x, x̃) (x). A model far left reconstructs badly, whatever its robustness."""
    figure, panels = _panel_per_attack(results)
    fidelity = _clean_statistics(results, "msssim_input_recon")[("clean", "msssim_input_recon", "", "mean")]
    for axis, attack in panels:
        column = _table1_metrics(results, attack)[0]
        stats = trial_statistics(results[results["attack"] == attack], column, by=("model", "lambda")).reset_index()
        for model in dict.fromkeys(results["model"]):
            rows = stats[stats["model"] == model].sort_values("lambda")
            x = np.full(len(rows), fidelity.get(model, np.nan))
            points = axis.scatter(x, rows["mean"], label=model)
            for x_value, (_, row) in zip(x, rows.iterrows()):
                axis.annotate(f"λ={lambda_text(row['lambda'])}", (x_value, row["mean"]), fontsize=7,
                              xytext=(4, 0), textcoords="offset points", color=points.get_facecolor()[0])
        # The whole fidelity range, so that a model that reconstructs nothing stands apart at the left.
        axis.set_xlim(min(0.0, float(np.nanmin(fidelity.to_numpy(), initial=0.0))) - 0.02, 1.02)
        axis.set_xlabel("clean MS-SSIM(x, x̃) (fidelity)")
        axis.set_ylabel(METRICS_BY_COLUMN[column].text)
    return _with_model_legend(figure, panels)


def example_grid_figure(examples: dict, attack: str, lam: str, per_model: int = 2):
    """Fig. 3: rows of input | clean reconstruction | adversarial input | its reconstruction | target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(model, grid) for (model, a, l), array in examples.items() if a == attack and l == lam
            for grid in array[:per_model]]
    if not rows:
        return None
    has_target = any(not np.isnan(grid[4]).all() for _, grid in rows)
    columns = EXAMPLE_COLUMNS if has_target else EXAMPLE_COLUMNS[:4]
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(1.5 * len(columns) + 1.2, 1.5 * len(rows)),
                                squeeze=False)
    previous_model = None
    for row, (model, grid) in enumerate(rows):
        for col, title in enumerate(columns):
            axis = axes[row][col]
            image = grid[col]
            axis.set_xticks([])
            axis.set_yticks([])
            if np.isnan(image).all():
                axis.set_facecolor("#eeeeee")
            elif image.shape[0] == 1:
                axis.imshow(image[0], cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
            if row == 0:
                axis.set_title(title, fontsize=8)
        if model != previous_model:
            axes[row][0].set_ylabel(model, fontsize=8)
            previous_model = model
    figure.suptitle(f"{ATTACK_TITLES.get(attack, attack)}, λ = {lam}", fontsize=10)
    figure.tight_layout()
    return figure


# --- the report -----------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def _write_tables_and_figures(results: pd.DataFrame, out_dir: Path, prefix: str = "") -> dict[str, object]:
    """Table 1, Table 3, the summary and Fig. 2; returns {name: {format: path} or path}."""
    written: dict[str, object] = {}
    table1 = table1_statistics(results)
    if len(table1.columns):
        written["table1_msssim"] = write_statistics_table(table1, out_dir, f"{prefix}table1_msssim")
    table3 = table3_statistics(results)
    if table3 is not None:
        written["table3_latent_classifier"] = write_statistics_table(
            table3, out_dir, f"{prefix}table3_latent_classifier", decimals=2)
    written["fidelity"] = write_statistics_table(fidelity_statistics(results), out_dir, f"{prefix}fidelity")
    written["summary"] = write_statistics_table(summary_statistics(results), out_dir, f"{prefix}summary")
    written["fig2_attack_loss"] = save_figure(attack_loss_figure(results), out_dir, f"{prefix}fig2_attack_loss")
    written["robustness_vs_fidelity"] = save_figure(robustness_fidelity_figure(results), out_dir,
                                                    f"{prefix}robustness_vs_fidelity")
    written.update(_statistics_outputs(results, out_dir, prefix))
    return written


def _statistics_outputs(results: pd.DataFrame, out_dir: Path, prefix: str) -> dict[str, object]:
    """Intervals, paired tests (two or more models), universal share, AUDDC with its curve figure."""
    from .distortion import distortion_curves, distortion_figure
    from .stats import report_tables

    written: dict[str, object] = {name: write_table(table, out_dir, f"{prefix}{name}")
                                  for name, table in report_tables(results, FLOAT_COLUMNS).items()}
    curves = distortion_curves(results)
    if len(curves):
        written["fig_distortion_curve"] = save_figure(distortion_figure(curves), out_dir, f"{prefix}fig_distortion_curve")
    return written


FLAG_COLUMNS = ["model", "attack", "lambda", "flag", "count", "of", "message"]


def lambda_flags(results: pd.DataFrame, manifest: dict) -> list[dict]:
    """Flags that compare lambdas, per sample, over the saved blocks of each (model, attack).

    An audit attacks one lambda per block, so the sweep itself cannot compare them. Computed only
    where every lambda of the audit has its rows and the manifest says which way the attack loss
    points (``attacks.NAME.maximize``).
    """
    import torch

    from .attacks.sanity import non_monotone_flags

    lambdas = sorted(results["lambda"].unique())
    flags = []
    for (model, attack), rows in results.groupby(["model", "attack"], sort=False):
        maximize = ((manifest.get("attacks") or {}).get(attack) or {}).get("maximize")
        if maximize is None or sorted(rows["lambda"].unique()) != lambdas:
            continue
        table = rows.pivot_table(index=["trial", "image_id"], columns="lambda", values="attack_loss",
                                 aggfunc="first", dropna=False)
        loss = torch.tensor(table[lambdas].to_numpy().T)
        for flag in non_monotone_flags(lambdas, loss, bool(maximize)):
            flags.append({"model": model, "attack": attack, "lambda": ", ".join(map(lambda_text, lambdas)), **flag})
    return flags


def sanity_flags_table(manifest: dict, results: pd.DataFrame | None = None) -> pd.DataFrame:
    """The sanity flags of an audit: one row per (model, attack, flag), repeated flags merged.

    A flag raised at several lambdas (e.g. ``unbounded-target-missed``) is one row whose lambda cell
    lists them and whose count and of are summed; its message gives the counts per lambda, then the
    first lambda's message. With ``results``, the flags across lambdas (``lambda_flags``)
    are added.
    """
    raw = [dict(flag) for flag in manifest.get("flags") or []]
    if results is not None:
        raw += lambda_flags(results, manifest)
    merged: dict[tuple, list[dict]] = {}
    for flag in raw:
        merged.setdefault((flag.get("model"), flag.get("attack"), flag.get("flag")), []).append(flag)
    rows = []
    for (model, attack, name), group in merged.items():
        row = {k: group[0].get(k) for k in FLAG_COLUMNS}
        if len(group) > 1:
            lambdas = [_lambda_cell(f.get("lambda")) for f in group]
            row["lambda"] = ", ".join(lambdas)
            row["count"] = sum(int(f.get("count") or 0) for f in group)
            row["of"] = sum(int(f.get("of") or 0) for f in group)
            per_lambda = "; ".join(f"λ = {lam}: {f.get('count')} of {f.get('of')}" for lam, f in zip(lambdas, group))
            row["message"] = (f"raised at {len(group)} lambdas ({per_lambda}); at λ = {lambdas[0]}: "
                              f"{group[0].get('message')}")
        else:
            row["lambda"] = _lambda_cell(row["lambda"])
        rows.append(row)
    return pd.DataFrame(rows, columns=FLAG_COLUMNS)


def _lambda_cell(value) -> str:
    """A flag's lambda as table text: a number, a list already joined, or "" for a flag about the whole model."""
    if value is None:
        return ""
    return lambda_text(value) if isinstance(value, (int, float)) else str(value)


def degenerate_models(flags: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(flags.loc[flags["flag"] == "degenerate-model", "model"]))


def build_report(results_dir, out_dir=None) -> dict[str, Path]:
    """Rebuild every table, figure and the HTML page of an audit directory; returns the written paths.

    ``out_dir`` defaults to ``RESULTS_DIR/report``. Keys: ``table1_msssim.csv`` style names for tables,
    figure stems for PNGs, ``report.html`` and ``manifest.json``.
    """
    audit = load_results(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else audit.directory / "report"
    _refuse_audit_dir(audit.directory, out_dir)
    settings = resolve_msssim_settings(audit.metric_settings).as_dict() if audit.metric_settings else None
    written = _write_tables_and_figures(audit.results, out_dir)
    flags = sanity_flags_table(audit.manifest, audit.results)
    if len(flags):
        written["sanity_flags"] = write_table(flags, out_dir, "sanity_flags")
    examples = audit.examples()
    figures = {}
    for model, attack, lam in examples:
        key = f"fig3_examples_{_slug(attack)}_lambda{_slug(lam)}"
        if key in figures:
            continue
        figure = example_grid_figure(examples, attack, lam)
        if figure is not None:
            figures[key] = save_figure(figure, out_dir, key)
    written.update(figures)
    title = f"aerobust audit report: {audit.directory.name}"
    page = _html_page(title, written, settings, [(audit.directory, audit.manifest)], audit.results, flags)
    written["report.html"] = out_dir / "report.html"
    written["report.html"].write_text(page)
    written["manifest.json"] = write_manifest(
        out_dir, command="report", config={"results_dir": str(audit.directory.resolve())},
        seed=audit.manifest.get("seed"), device="none", metrics=settings,
        source_manifest=audit.manifest)
    return _flatten_paths(written)


def _refuse_audit_dir(results_dir: Path, out_dir: Path):
    if out_dir.resolve() == results_dir.resolve():
        raise AerobustError(f"--out {out_dir} is the audit directory itself, whose manifest.json the report "
                            f"must not overwrite; choose another directory")


def _flatten_paths(written: dict) -> dict[str, Path]:
    flat = {}
    for name, value in written.items():
        if isinstance(value, dict):
            flat.update({Path(path).name: Path(path) for path in value.values()})
        else:
            flat[Path(value).name] = Path(value)
    return flat


def compare(dirs: Sequence) -> pd.DataFrame:
    """One Table-1 layout over several audit directories (models of all of them).

    Raises AerobustError when the audits scored with different MS-SSIM settings.
    """
    return table1_statistics(_combined(dirs)[0])


def write_comparison(dirs: Sequence, out_dir) -> dict[str, Path]:
    """Tables, Fig. 2 and an HTML page over several audits, with the shared metric settings."""
    results, audits, settings = _combined(dirs)
    out_dir = Path(out_dir)
    for audit in audits:
        _refuse_audit_dir(audit.directory, out_dir)
    written = _write_tables_and_figures(results, out_dir, prefix="comparison_")
    page = _html_page("aerobust comparison", written, settings,
                      [(audit.directory, audit.manifest) for audit in audits], results, None)
    written["report.html"] = out_dir / "report.html"
    written["report.html"].write_text(page)
    written["manifest.json"] = write_manifest(
        out_dir, command="compare", config={"results_dirs": [str(a.directory.resolve()) for a in audits]},
        seed=None, device="none", metrics=settings)
    return _flatten_paths(written)


def _comparable(settings: dict | None) -> dict | None:
    if not settings:
        return None
    values = resolve_msssim_settings(settings).as_dict()
    values.pop("preset")  # a name only; equal numbers score equally whatever they were called
    return values


def _scored_sample(audit: AuditResults) -> dict:
    """What an audit's numbers average over: its data and the (image, trial) rows it attacked."""
    config = audit.manifest.get("config") or {}
    return {"data": [config.get(k) for k in ("data", "split", "pad_to", "resize")],
            "images": sorted(set(audit.results["image_id"].tolist())),
            "trials": sorted(set(audit.results["trial"].tolist()))}


def _combined(dirs: Sequence):
    if len(dirs) < 1:
        raise AerobustError("compare needs at least one audit directory")
    audits = [load_results(d) for d in dirs]
    reference = _comparable(audits[0].metric_settings)
    for audit in audits:
        if reference is None or _comparable(audit.metric_settings) is None:
            raise AerobustError(f"{audit.directory}/manifest.json records no MS-SSIM settings ('metrics'), so its "
                                f"scores cannot be compared; rerun that audit")
        if _comparable(audit.metric_settings) != reference:
            differing = sorted(k for k in reference if reference[k] != _comparable(audit.metric_settings).get(k))
            raise AerobustError(
                f"{audit.directory} scored MS-SSIM with other settings than {audits[0].directory} (differing: "
                f"{', '.join(differing)}); their numbers are not comparable, rerun the audits with one setting")
    reference_sample = _scored_sample(audits[0])
    for audit in audits[1:]:
        sample = _scored_sample(audit)
        differing = [k for k in reference_sample if sample[k] != reference_sample[k]]
        if differing:
            raise AerobustError(
                f"{audit.directory} scored other {', '.join(differing)} than {audits[0].directory}, so their means "
                "and counts are not comparable; compare audits run with the same --data, --images, --trials, --seed")
    frames = []
    seen: dict[str, int] = {}
    for audit in audits:
        for model in dict.fromkeys(audit.results["model"]):
            seen[model] = seen.get(model, 0) + 1
    names = [a.directory.name for a in audits]
    for index, audit in enumerate(audits):
        frame = audit.results.copy()
        source = names[index] if names.count(names[index]) == 1 else f"{names[index]}#{index + 1}"
        frame["model"] = [m if seen[m] == 1 else f"{m} [{source}]" for m in frame["model"]]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), audits, resolve_msssim_settings(audits[0].metric_settings).as_dict()


# --- HTML -----------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1400px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em;
       margin-top: 2em; }
table.aerobust-table, table.settings { border-collapse: collapse; font-size: 0.8em; margin: .5em 0 1em; }
table.aerobust-table caption { caption-side: top; text-align: left; color: #444; padding: 0 0 .3em; }
table.aerobust-table th, table.aerobust-table td, table.settings th, table.settings td {
       border: 1px solid #ddd; padding: 2px 6px; }
/* headers wrap so that a wide table stays inside the page; numbers never do */
table.aerobust-table th { background: #f2f4f7; text-align: center; vertical-align: bottom; white-space: normal; }
table.aerobust-table td { white-space: nowrap; vertical-align: top; }
table.aerobust-table td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: normal; }
table.aerobust-table td.num .pm { display: block; font-size: .85em; color: #666; white-space: nowrap; }
table.aerobust-table .text { text-align: left; }
table.aerobust-table td.text { white-space: normal; min-width: 4em; }
table.settings th { text-align: left; background: #f7f7f7; }
table.settings td { text-align: left; }
.warning { background: #fff1f0; border: 1px solid #e0a0a0; padding: .6em; }
.scroll { overflow-x: auto; } img { max-width: 100%; } .note { color: #555; font-size: .9em; }
.examples img { max-width: 560px; margin: 0 1em 1em 0; } .examples { display: flex; flex-wrap: wrap; }
pre { background: #f7f7f7; padding: .7em; font-size: .8em; overflow-x: auto; }
"""


def _image_tag(path: Path, alt: str) -> str:
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _settings_table(values: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in values.items())
    return f'<table class="settings">{rows}</table>'


def _manifest_fields(manifest: dict) -> dict:
    versions = manifest.get("versions") or {}
    fields = {key: manifest.get(key) for key in ("command", "created", "seed", "device", "platform")}
    fields.update({f"version {k}": versions.get(k) for k in ("aerobust", "torch", "pytorch-msssim") if k in versions})
    return {k: v for k, v in fields.items() if v is not None}


def _html_page(title: str, written: dict, settings: dict | None, sources, results: pd.DataFrame,
               flags: pd.DataFrame | None) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    counts = (f"{results['model'].nunique()} model(s), {results['attack'].nunique()} attack(s), "
              f"λ ∈ {{{', '.join(lambda_text(v) for v in sorted(results['lambda'].unique()))}}}, "
              f"{results['trial'].nunique()} trial(s), {results['image_id'].nunique()} image(s), "
              f"{len(results)} rows.")
    parts.append(f"<p class='note'>{html.escape(counts)} Every cell is the mean ± standard deviation over trials "
                 f"of the per-trial mean over images, and n the rows it averages (\"n=800 of 1000\": 200 rows of "
                 f"that cell hold no finite value).</p>")
    degenerate = [] if flags is None else degenerate_models(flags)
    if degenerate:
        parts.append(f"<p class='warning'><b>degenerate-model: {html.escape(', '.join(degenerate))}.</b> The "
                     "reconstructions of these models do not depend on their input, so no attack can change them: "
                     "their robustness scores mean nothing (see the sanity flags and the fidelity table).</p>")
    sections = (
        ("table1_msssim", "Table 1: MS-SSIM under attack",
         "x_r is the reference image: the target x_t for targeted attacks, the input x otherwise; x̃ are "
         "reconstructions. ↓: lower means a more robust model; ↑: higher means a more robust model."),
        ("table3_latent_classifier", "Table 3: latent-space classifier accuracy (%)", ""),
        ("fidelity", "Clean fidelity and code sensitivity",
         "Clean behaviour on the audited images (no attack): MS-SSIM and MSE between x and its reconstruction x̃. "
         "Code sensitivity: how far the attack moved the code, ‖g(x_a) − g(x)‖, in units of the code separation "
         "(the median distance from g(x) to the codes of the other audited images); 1 means the attack moved the "
         "code as far as the code of a typical other image lies."),
        ("summary", "All metrics per model, attack and λ", ""),
        ("intervals", "95 % intervals of every cell", "Percentile cluster bootstrap over images, each image "
         "resampled with all of its trials (2000 resamples); counts of images, trials and rows beside each mean."),
        ("paired_tests", "Paired tests between models", "Same images and targets; per-image trial means, "
         "sign-flip permutation test of the mean difference (model_b − model_a), Holm-corrected over the table; "
         "holds: p_holm < 0.05."),
        ("universal_share", "Universal perturbation against per-image maximum damage",
         "share = mean ‖x̃_a − x̃_r‖ of the universal attack / that of the max-damage attack, same rows."),
        ("auddc", "AUDDC (area under the distortion-distortion curve)", "Higher = more robust; needs λ = 0 "
         "in the grid. The curve is the figure below."),
    )
    for key, heading, note in sections:
        if key in written:
            fragment = Path(written[key]["html"]).read_text()
            parts.append(f"<h2>{html.escape(heading)}</h2>"
                         + (f"<p class='note'>{html.escape(note)}</p>" if note else "")
                         + f"<div class='scroll'>{fragment}</div>")
    if len(sources) == 1 and "flags" in sources[0][1]:
        parts.append("<h2>Sanity flags</h2><p class='note'>Checks in the spirit of AutoAttack's: zero or NaN "
                     "gradients, attack loss not monotone in λ (per sample, across the audit's λ), an unbounded latent "
                     "attack that misses its target, an attack weaker than random noise of the same norm; NaN/inf "
                     "values (non-finite); a model whose reconstructions ignore the input (degenerate-model). A flag "
                     "means the numbers of that block may overstate robustness. A flag raised at several λ is one "
                     "row with summed counts.</p>")
        parts.append(f"<div class='scroll'>{Path(written['sanity_flags']['html']).read_text()}</div>"
                     if "sanity_flags" in written else "<p>No flag was raised.</p>")
    parts.append("<h2>Figure 2: attack loss against λ</h2>" + _image_tag(written["fig2_attack_loss"], "attack loss"))
    parts.append("<h2>Robustness against clean fidelity</h2>"
                 + _image_tag(written["robustness_vs_fidelity"], "robustness against fidelity"))
    if "fig_distortion_curve" in written:
        parts.append("<h2>Distortion-distortion curve</h2>" + _image_tag(written["fig_distortion_curve"], "AUDDC"))
    example_keys = [k for k in written if k.startswith("fig3_")]
    if example_keys:
        parts.append("<h2>Figure 3: examples</h2><p class='note'>input | clean reconstruction | adversarial input | "
                     "adversarial reconstruction | target (targeted attacks)</p>")
        parts.append("<div class='examples'>" + "".join(_image_tag(written[k], k) for k in example_keys) + "</div>")
    parts.append("<h2>MS-SSIM settings</h2>")
    parts.append(_settings_table(settings) if settings else "<p>No MS-SSIM settings recorded.</p>")
    for directory, manifest in sources:
        parts.append(f"<h2>Audit {html.escape(str(directory))}</h2>" + _settings_table(_manifest_fields(manifest)))
        if manifest.get("config") is not None:
            parts.append("<details><summary>audit config</summary><pre>"
                         + html.escape(json.dumps(manifest["config"], indent=2, sort_keys=True)) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)
