"""Budgets and MS-SSIM settings that mean something at every image size, recorded with the results."""
import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from aerobust.cli import main
from aerobust.metrics import ms_ssim, msssim_settings_for


@pytest.mark.parametrize("shape, preset, scales", [
    ((1, 32, 32), "paper", 5), ((1, 28, 28), "paper", 5), ((3, 32, 32), "small", 3), ((3, 64, 64), "small", 3),
    ((3, 128, 128), "small", 3), ((3, 256, 256), "pytorch_msssim", 5), ((1, 200, 180), "pytorch_msssim", 5),
    ((3, 16, 16), "small", 2), ((1, 8, 8), "small", 1)])
def test_auto_msssim_settings_follow_the_image(shape, preset, scales):
    settings = msssim_settings_for("auto", shape)
    assert settings.preset.startswith(f"auto: {preset}") and settings.scales == scales
    assert "x".join(map(str, shape)) in settings.preset
    # every choice can score images of that shape, and an image scores 1 against itself
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ms_ssim(x, x, settings), torch.ones(2), rtol=0, atol=1e-5)
    assert msssim_settings_for("small", shape).preset == "small"


def test_audit_records_the_absolute_radius_of_a_relative_budget(tmp_path, monkeypatch):
    monkeypatch.setattr("aerobust.audit.AuditConfig.classifier_epochs", 1)
    out = tmp_path / "audit"
    result = CliRunner().invoke(main, [
        "audit", "--model", "mlp-ae-32", "--data", "digits", "--pad", "32", "--images", "2", "--trials", "1",
        "--attacks", "max-damage", "--lambdas", "0.01,0.02", "--budget", "rms", "--attack-option",
        "max-damage.steps=2", "--quiet", "--no-report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    radius = results.groupby("lambda")["radius"].unique().apply(list).to_dict()
    assert radius == {0.01: [pytest.approx(0.32)], 0.02: [pytest.approx(0.64)]}
    assert (results["l2_delta"] <= results["radius"] * (1 + 1e-5)).all()
    manifest = json.loads((out / "manifest.json").read_text())
    attack = manifest["attacks"]["max-damage"]
    assert attack["budget"] == "rms" and manifest["radii"]["max-damage"] == pytest.approx({"0.01": 0.32, "0.02": 0.64})
    assert manifest["metrics"]["preset"] == "auto: paper for 1x32x32 images"
    bad = CliRunner().invoke(main, ["audit", "--model", "mlp-ae-32", "--budget", "rms", "--attack-option",
                                    "*.norm=linf", "--quiet", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "measured in l2, not norm 'linf'" in bad.output
