"""Conclusions follow the paired statistics: the verdict function and every sentence built from it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aerobust.report.summary import summary_sentences
from aerobust.stats import paired_comparisons
from aerobust.verdicts import IDENTICAL, NOT_ESTABLISHED, Fidelity, paired_verdict, verdict

IMAGES, TRIALS = 40, 2


def _results(shift_b: float, *, noise: float = 0.05, fidelity_b: float = 0.8, seed: int = 0) -> pd.DataFrame:
    """Two models on one plan: B's max-damage MS-SSIM is A's plus ``shift_b`` (plus per-row noise)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.7, size=(TRIALS, IMAGES))
    rows = []
    for model, shift, fidelity in (("A", 0.0, 0.8), ("B", shift_b, fidelity_b)):
        jitter = 0.0 if shift == 0.0 and model == "A" else rng.normal(0, noise, size=base.shape)
        values = base + shift + jitter
        for trial in range(TRIALS):
            for image in range(IMAGES):
                rows.append({"model": model, "attack": "max-damage", "lambda": 1.0, "trial": trial, "image_id": image,
                             "target_id": -1, "msssim_recon_advrecon": values[trial, image],
                             "msssim_target_advrecon": np.nan, "msssim_input_adv": 0.9,
                             "msssim_input_recon": fidelity})
    return pd.DataFrame(rows)


def _identical() -> pd.DataFrame:
    """The same model under two labels: every row of B equals A's."""
    a = _results(0.0)
    a = a[a["model"] == "A"]
    return pd.concat([a, a.assign(model="B")], ignore_index=True)


def test_identical_models_are_never_ranked():
    results = _identical()
    paired = paired_comparisons(results, ["msssim_recon_advrecon"])
    assert bool(paired["identical"].iloc[0]) and not bool(paired["holds"].iloc[0])
    sentences = summary_sentences(results, [], paired)
    text = " ".join(sentences)
    assert "identically" in text and "no ranking" in text
    assert "is the most robust" not in text and "is more robust than" not in text


def test_a_clear_difference_holds_with_an_interval_that_excludes_zero():
    results = _results(0.1)
    paired = paired_comparisons(results, ["msssim_recon_advrecon"])
    row = paired.iloc[0]
    assert row["ci_low"] > 0 and row["p_holm"] < 0.05 and bool(row["holds"])
    # higher MS-SSIM(x̃, x̃_a) is more robust: B is
    v = paired_verdict(row, "max-damage", higher_is_more_robust=True)
    assert v.winner == "B" and v.claim("B") == "holds" and v.claim("A") == "reversed"
    assert v.difference == pytest.approx(-row["difference"]) and v.high == pytest.approx(-row["ci_low"])
    text = " ".join(summary_sentences(results, [], paired))
    assert "B is the most robust" in text and "[" in text and "Holm-adjusted p" in text


def test_a_small_difference_is_not_established_and_says_so_with_its_interval():
    results = _results(0.004, noise=0.1)
    paired = paired_comparisons(results, ["msssim_recon_advrecon"])
    v = paired_verdict(paired.iloc[0], "max-damage", higher_is_more_robust=True)
    assert v.outcome == NOT_ESTABLISHED and v.winner is None and v.claim("B") == "not established"
    assert v.low < 0 < v.high
    text = " ".join(summary_sentences(results, [], paired))
    assert "no model is established as the most robust" in text and "not established" in text
    # the summary compares the higher-scoring B against A: the same interval, turned
    assert f"[{-v.high:+.3f}, {-v.low:+.3f}]" in text


def test_more_robust_at_lower_fidelity_is_said():
    results = _results(0.1, fidelity_b=0.4)
    paired = paired_comparisons(results, ["msssim_recon_advrecon"])
    text = " ".join(summary_sentences(results, [], paired))
    assert "LOWER clean fidelity" in text


def test_verdict_orientation_for_lower_is_more_robust():
    # first - second = +0.2 in a quantity where lower is more robust: second is more robust
    v = verdict("A", "B", "latent distance", difference=0.2, low=0.1, high=0.3, p_holm=0.001, units="50 images",
                higher_is_more_robust=False)
    assert v.winner == "B" and (v.difference, v.low, v.high) == pytest.approx((-0.2, -0.3, -0.1))


def test_a_significant_p_with_an_interval_through_zero_is_not_a_verdict():
    v = verdict("A", "B", "q", difference=0.01, low=-0.001, high=0.02, p_holm=0.01, units="50 images")
    assert v.outcome == NOT_ESTABLISHED
    assert verdict("A", "B", "q", difference=0.0, low=0.0, high=0.0, p_holm=1.0, units="x",
                   identical=True).outcome == IDENTICAL


def test_fidelity_clause_names_both_models():
    v = verdict("A", "B", "q", difference=0.01, low=-0.01, high=0.03, p_holm=0.4, units="50 images",
                fidelity_first=Fidelity("MS-SSIM(x, x̃)", 0.7), fidelity_second=Fidelity("MS-SSIM(x, x̃)", 0.9))
    assert "A 0.700" in v.sentence() and "B 0.900" in v.sentence()
