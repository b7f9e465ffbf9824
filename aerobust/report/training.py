"""The report of training runs: loss curves per epoch and a table of where each loss term ended.

A training run directory (written by ``aerobust train`` / :func:`aerobust.training.train`) holds
``history.jsonl`` (one JSON object per epoch: ``epoch``, every loss term, ``epoch_time_s``) and
``manifest.json``. ``build_training_report`` reads only those files; nothing is trained or re-run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import AerobustError
from ..output_folder import claim_output_folder
from ..runtime import write_manifest
from ..audit.store import RESULTS_FILE
from ..output_folder import HISTORY_FILE
from .style import paper_figure, styled
from .writer import save_figure, write_table

# Columns of a history row that are not loss terms.
BOOKKEEPING_COLUMNS = ("epoch", "epoch_time_s")


def is_training_run(directory) -> bool:
    """Whether ``directory`` holds a training history (and no audit results)."""
    directory = Path(directory)
    return (directory / HISTORY_FILE).is_file() and not (directory / RESULTS_FILE).is_file()


def read_history(run_dir) -> pd.DataFrame:
    """The per-epoch history of a training run as a table; an AerobustError when it is missing or damaged."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        raise AerobustError(f"{run_dir} has no {HISTORY_FILE}; pass the --out directory of an `aerobust train` run")
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise AerobustError(f"{path} has a line that is not JSON ({exc}); rerun or resume the training") from None
    if not rows or not all(isinstance(row, dict) and "epoch" in row for row in rows):
        raise AerobustError(f"{path} holds no epochs (each line must be an object with 'epoch'); rerun the training")
    return pd.DataFrame(rows)


def loss_terms(history: pd.DataFrame) -> list[str]:
    return [c for c in history.columns if c not in BOOKKEEPING_COLUMNS]


def history_summary(histories: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per run and loss term: the first and last epoch's value, the lowest value and its epoch."""
    rows = []
    for run, history in histories.items():
        for term in loss_terms(history):
            values = history[term].astype(float)
            lowest = int(values.idxmin()) if values.notna().any() else None
            rows.append({"run": run, "loss term": term, "epochs": len(history),
                         "first": values.iloc[0], "last": values.iloc[-1],
                         "lowest": values.min(),
                         "lowest at epoch": history["epoch"].iloc[lowest] if lowest is not None else np.nan})
    return pd.DataFrame(rows).set_index(["run", "loss term"])


@styled
def history_figure(histories: Mapping[str, pd.DataFrame]):
    """One panel per loss term (unweighted, per epoch), one line per run in the same colour in every panel;
    log scale where all values are positive.

    A term is named by each run's own defense: two runs' "cv" can be different quantities (eq. 5's
    covariance loss for GMM-DAE, eq. 10's joint covariance of (z, z_adv) for coupled-KS), so a panel that
    holds several runs says so in its title, and the legend below names every run once.
    """
    import matplotlib

    terms = list(dict.fromkeys(t for history in histories.values() for t in loss_terms(history)))
    colors = {run: matplotlib.colormaps["tab10"](k % 10) for k, run in enumerate(histories)}
    ncols = min(3, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    figure, axes = paper_figure(nrows, ncols, width="double", height=1.9 * nrows + 0.4)
    for axis, term in zip(axes.flat, terms):
        positive, runs = True, []
        for run, history in histories.items():
            if term in history:
                axis.plot(history["epoch"], history[term], label=run, color=colors[run])
                positive = positive and bool((history[term] > 0).all())
                runs.append(run)
        if positive:
            axis.set_yscale("log")
        shared = " (each run's own definition)" if len(runs) > 1 else f" ({runs[0]} only)" if len(histories) > 1 else ""
        axis.set_title(term.replace("_", " ") + shared, fontsize=8)
        axis.set_xlabel("epoch")
        axis.set_ylabel("loss term, unweighted\n(batch mean; log scale)" if positive else
                        "loss term, unweighted\n(batch mean)")
    for axis in list(axes.flat)[len(terms):]:
        axis.set_visible(False)
    if len(histories) > 1:
        handles = [matplotlib.lines.Line2D([], [], color=colors[run]) for run in histories]
        figure.legend(handles, list(histories), loc="outside lower center", ncol=min(len(histories), 5))
    return figure


def build_training_report(run_dir, out_dir=None) -> dict[str, Path]:
    """Loss curves and the history summary of one training run; ``out_dir`` defaults to ``RUN_DIR/report``."""
    run_dir = Path(run_dir)
    history = read_history(run_dir)
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    if out_dir.resolve() == run_dir.resolve():
        raise AerobustError(f"--out {out_dir} is the training run itself, whose manifest.json the report must not "
                            "overwrite; choose another directory")
    claim_output_folder(out_dir, "report", {"run_dir": str(run_dir.resolve())})
    histories = {run_dir.name: history}
    written = {f"history_summary.{fmt}": path for fmt, path in write_table(
        history_summary(histories), out_dir, "history_summary",
        caption=f"Loss terms of the training run {run_dir.name} (unweighted, mean over the epoch's batches).",
        number_formats={"first": "{:.4g}", "last": "{:.4g}", "lowest": "{:.4g}"}).items()}
    written["training_curves.png"] = save_figure(history_figure(histories), out_dir, "training_curves")
    written["manifest.json"] = write_manifest(out_dir, command="report", config={"run_dir": str(run_dir.resolve())},
                                              seed=manifest.get("seed"), device="none", source_manifest=manifest)
    return written
