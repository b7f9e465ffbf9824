"""Reading an audit directory: results.csv, manifest.json and examples.npz, each checked on the way in.

An audit directory holds ``results.csv`` (long format, one row per model, attack, lambda, trial and
image; columns in ``RESULT_COLUMNS``), ``manifest.json`` (``"metrics"``: the MS-SSIM settings,
``"config"``: the audit config) and optionally ``examples.npz`` (keys ``MODEL::ATTACK::LAMBDA``, each
``(K, 5, C, H, W)`` in [0, 1]: input, clean reconstruction, adversarial input, adversarial
reconstruction, target; the target is all-NaN for untargeted attacks). Every problem is one
AerobustError that says what to fix.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import AerobustError
from ..results import lambda_text
from .columns import EXAMPLE_COLUMNS, FLOAT_COLUMNS, INTEGER_COLUMNS, RESULT_COLUMNS, SETTING_COLUMNS

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
    if "radius" not in frame.columns and "lambda" in frame.columns:
        # Written before attacks had budgets: lambda was then the absolute L2 radius itself.
        frame["radius"] = frame["lambda"]
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

