"""The results schema has one owner (aerobust/results.py) and follows the METRICS registry."""
import numpy as np
import pandas as pd
import pytest
import torch

from aerobust.audit import Audit, AuditConfig, ModelSpec
from aerobust.fidelity import frechet_distance_small_classifier
from aerobust.metrics import MSSSIM_PRESET_SUMMARIES, MSSSIM_PRESETS, AUTO_MSSSIM
from aerobust.registry import METRICS
from aerobust.report import summary_statistics, write_statistics_table
from aerobust.results import (CLEAN_COLUMNS, FLOAT_COLUMNS, IDENTITY_COLUMNS, METRICS_BY_COLUMN, RESULT_COLUMNS,
                              ResultMetric)

def _linf_delta(rows):
    return (rows.x_adv - rows.x).flatten(1).abs().amax(dim=1)


LINF = ResultMetric("linf_delta_test", "largest pixel change (test)", r"$\|x_a - x\|_\infty$ (test)",
                    compute=_linf_delta)


def test_a_metric_registered_from_a_test_is_a_column_a_table_row_and_a_label(tmp_path, monkeypatch, mnist_test):
    # Real digits without labels: no latent classifier to train, so the audit takes a second.
    np.savez(tmp_path / "digits.npz", x=(mnist_test.images[:4, 0] * 255).round().byte().numpy())
    METRICS.list()  # built-ins first, so the new metric comes last
    monkeypatch.setitem(METRICS._entries, LINF.column, LINF)
    assert list(RESULT_COLUMNS)[-1] == LINF.column and METRICS_BY_COLUMN[LINF.column] is LINF
    config = AuditConfig(models=[ModelSpec("tiny", model="mlp-ae-32", model_args={"hidden": [16]})],
                         data=f"npz:{tmp_path / 'digits.npz'}", split="all", attacks=["max-damage"], lambdas=[0.5],
                         images=4, trials=1, examples=4, attack_options={"max-damage": {"steps": 3}})
    results = Audit(config, tmp_path / "audit", device="cpu", quiet=True).run()
    assert list(results.columns) == list(RESULT_COLUMNS)
    # The column is what the metric says, computed here from the saved inputs and adversarial inputs.
    with np.load(tmp_path / "audit" / "examples.npz") as examples:
        example = torch.from_numpy(examples["tiny::max-damage::0.5"])
    expected = (example[:, 2] - example[:, 0]).flatten(1).abs().amax(dim=1).double()
    torch.testing.assert_close(torch.tensor(results[LINF.column].to_numpy()), expected)
    assert (results[LINF.column] > 0).all()
    write_statistics_table(summary_statistics(results), tmp_path, "summary")
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary[f"{LINF.column}/mean"].item() == pytest.approx(float(expected.mean()))
    assert summary[f"{LINF.column}/n"].item() == 4
    assert LINF.text in (tmp_path / "summary.md").read_text()
    assert r"\infty$ (test)" in (tmp_path / "summary.tex").read_text()


def test_the_builtin_schema():
    assert tuple(RESULT_COLUMNS) == (*IDENTITY_COLUMNS, *FLOAT_COLUMNS)
    assert set(CLEAN_COLUMNS) == {"clean_classifier_correct", "msssim_input_recon", "mse_input_recon"}
    assert all(METRICS_BY_COLUMN[c].compute is not None for c in FLOAT_COLUMNS)
    # Set-level metrics are registered but are no results column.
    assert METRICS.get("frechet-small-classifier") is frechet_distance_small_classifier
    assert not {"frechet-small-classifier", "ms-ssim", "auddc"} & set(RESULT_COLUMNS)
    assert set(MSSSIM_PRESET_SUMMARIES) == {AUTO_MSSSIM, *MSSSIM_PRESETS}


def test_a_per_image_metric_must_be_clean():
    with pytest.raises(ValueError, match="clean"):
        ResultMetric("x", "x", "x", compute=_linf_delta, per_image=True)


def test_list_metrics_shows_the_columns_the_set_metrics_and_the_msssim_presets():
    from click.testing import CliRunner

    from aerobust.cli import main

    output = CliRunner().invoke(main, ["list", "metrics"]).output
    lines = {line.split()[0]: line for line in output.splitlines() if line.startswith("  ")}
    assert "results column" in lines["msssim_input_adv"] and "(clean, no attack)" in lines["mse_input_recon"]
    assert "Frechet" in lines["frechet-small-classifier"] and "results column" not in lines["frechet-small-classifier"]
    assert "ms-ssim presets (audit --msssim):" in output
    assert {"auto", "small", "paper", "pytorch_msssim"} <= set(lines)
