"""The results schema: the columns of an audit's results.csv and how tables name them.

results.csv is long format, one row per (model, attack, lambda, trial, image). Its columns are the
identity columns below, then one column per registered :class:`ResultMetric` (``METRICS``
registry), in registration order. The audit evaluates every registered result metric on every
block, and the report labels and tabulates every one: registering a ``ResultMetric`` adds its
column, its summary-table row and its label with no other edit. Other registered metrics (image
pair functions such as ``ms-ssim``, curve metrics such as ``auddc``, set-level ones such as the
Frechet distances) are not columns.

The column names below are live views of the registry (read at each use), so a metric registered
after this module was imported is a column all the same.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Iterator

import pandas as pd
import torch
from torch import nn

from .registry import METRICS

# Which block and sample a row belongs to; unique per row.
KEY_COLUMNS = ("model", "attack", "lambda", "trial", "image_id")
INTEGER_COLUMNS = ("trial", "image_id", "target_id", "label", "target_label")
# The attack's absolute budget for each lambda (its unit is the attack's --budget): a setting, not a measurement.
SETTING_COLUMNS = ("radius",)
IDENTITY_COLUMNS = ("model", "attack", "lambda", *SETTING_COLUMNS, "trial", "image_id", "target_id", "label",
                    "target_label")
# examples.npz holds, per block, a few samples as five images each, in this order.
EXAMPLE_COLUMNS = ("input x", "clean reconstruction", "adversarial x_a", "adversarial reconstruction",
                   "target x_t")


def lambda_text(value: float) -> str:
    """A lambda as tables and file names print it (shortest form: 1, 0.5, 1e-05)."""
    return "{:g}".format(float(value))


def file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def block_stem(model: str, attack: str, lam: float) -> str:
    """A file-name-safe stem for the results of one (model, attack, lambda) block (unique: AuditConfig.validate)."""
    return file_safe(f"{model}__{attack}__lam{lambda_text(lam)}")


@dataclass
class MetricInputs:
    """What a result metric is computed from: one row per (trial, image) of a block, trial-major.

    ``x``, ``recon`` and ``code`` are the clean images, reconstructions and codes; ``code_separation``
    is each image's median code distance to the other audited images. The attacked fields are None
    for a metric evaluated once per image (``per_image``), and ``targets`` (target images),
    ``labels`` and ``head`` (the latent classifier) are None when the block has none.
    """

    model: nn.Module
    msssim: object  # the audit's MSSSIMSettings
    x: torch.Tensor
    recon: torch.Tensor
    code: torch.Tensor
    code_separation: torch.Tensor | None = None
    x_adv: torch.Tensor | None = None
    recon_adv: torch.Tensor | None = None
    code_adv: torch.Tensor | None = None
    attack_loss: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    head: nn.Module | None = None


@dataclass(frozen=True)
class ResultMetric:
    """A results column: how to compute it per row, and how tables name it (plain text and LaTeX).

    ``compute(inputs: MetricInputs) -> (rows,) tensor``, or None when the block lacks what it needs
    (a target metric of an untargeted attack): the column stays empty there. ``percent``: tables
    show the mean x 100. ``clean``: the column describes the model without attack (tables put it
    beside the attacks, not among them). ``per_image``: computed once per audited image before any
    attack, then repeated in every block. Without ``compute`` it is a label only (tables use one for
    a column no registered metric describes). ``direction``: which way is better (see below).
    """

    column: str
    text: str
    latex: str
    percent: bool = False
    compute: Callable[[MetricInputs], torch.Tensor | None] | None = None
    clean: bool = False
    per_image: bool = False
    # "higher" or "lower" is better (more robust under attack, more faithful when clean); None where
    # neither is (the attack's own loss, how visible the perturbation is). Tables draw the arrows.
    direction: str | None = None

    def __post_init__(self):
        if self.per_image and not self.clean:
            raise ValueError(f"result metric {self.column}: a per-image metric is computed without attack, "
                             "so it must be clean=True")


def result_metrics() -> list[ResultMetric]:
    """The registered result metrics, in registration order."""
    return [metric for _, metric in METRICS.items() if isinstance(metric, ResultMetric)]


class _LiveColumns(Sequence):
    """A tuple of column names recomputed from the registry at each use."""

    def __init__(self, columns: Callable[[], tuple[str, ...]]):
        self._columns = columns

    def __getitem__(self, index):
        return self._columns()[index]

    def __len__(self) -> int:
        return len(self._columns())

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns())

    def __repr__(self) -> str:
        return repr(self._columns())


class _LiveMetrics(Mapping):
    """``{column: ResultMetric}`` recomputed from the registry at each use."""

    def _table(self) -> dict[str, ResultMetric]:
        return {metric.column: metric for metric in result_metrics()}

    def __getitem__(self, column: str) -> ResultMetric:
        return self._table()[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


METRICS_BY_COLUMN = _LiveMetrics()
# The measured columns: one per registered result metric.
FLOAT_COLUMNS = _LiveColumns(lambda: tuple(metric.column for metric in result_metrics()))
RESULT_COLUMNS = _LiveColumns(lambda: (*IDENTITY_COLUMNS, *FLOAT_COLUMNS))
# Clean behaviour of the model on the audited image: one value per image, repeated in every block.
CLEAN_COLUMNS = _LiveColumns(lambda: tuple(metric.column for metric in result_metrics() if metric.clean))


def results_frame(identity: dict, measured: dict) -> pd.DataFrame:
    """One block's rows: ``identity`` holds every identity column (arrays of the rows' length or a value
    shared by all rows), ``measured`` the metric columns it has; the order is the schema's."""
    missing = set(IDENTITY_COLUMNS) - set(identity)
    unknown = set(identity) - set(IDENTITY_COLUMNS)
    if missing or unknown:
        raise ValueError(f"identity columns must be exactly {IDENTITY_COLUMNS}: missing {sorted(missing)}, "
                         f"unknown {sorted(unknown)}")
    return pd.DataFrame({**measured, **identity}).reindex(columns=RESULT_COLUMNS)
