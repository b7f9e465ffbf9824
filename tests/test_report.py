"""Reports from a small audit directory whose numbers are real MS-SSIM scores of real MNIST images.

The "models" are fixed image operators (blurs), the "adversarial" inputs noise of L2 norm lambda,
the "encoder" an 8x8 average pooling and the "classifier" the nearest class mean of those codes, so
every column is computed, not invented; the tables are then checked against direct computations.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hypothesis import given, settings as hypothesis_settings, strategies as st

from aerobust.cli import main
from aerobust.errors import AerobustError
from aerobust.metrics import MSSSIMSettings, l2_distance, ms_ssim
from aerobust.report import (RESULT_COLUMNS, build_report, compare, load_results,
                             table1_statistics, table3_statistics, cell_statistics, write_comparison)
from aerobust.runtime import write_manifest


LAMBDAS = (1.0, 3.0)
TRIALS = 3
IMAGES = 6
MODELS = {"blur-3": 3, "blur-7": 7}
ATTACKS = ("latent", "max-damage", "latent-classifier", "noise-plugin")


def _reconstruct(images, kernel):
    return F.avg_pool2d(images, kernel, stride=1, padding=kernel // 2, count_include_pad=False)


def _encode(images):
    return F.avg_pool2d(images, 4).flatten(1)


def _write_audit(directory, mnist_test, settings: MSSSIMSettings, models=MODELS):
    images, labels = mnist_test.images[:40], mnist_test.labels[:40]
    class_means = torch.stack([_encode(images[labels == c]).mean(0) for c in range(10)])

    def classify(batch):
        return torch.cdist(_encode(batch), class_means).argmin(1)

    inputs, input_labels = images[:IMAGES], labels[:IMAGES]
    target_index = torch.tensor([int(torch.nonzero(labels != label)[0]) for label in input_labels])
    targets = images[target_index]
    rows, examples = [], {}
    codes = _encode(inputs).numpy()
    # median distance from each code to the other images' codes, computed pair by pair
    separation = torch.tensor([np.median([np.linalg.norm(codes[i] - codes[j]) for j in range(IMAGES) if j != i])
                               for i in range(IMAGES)], dtype=torch.float32)
    for model, kernel in models.items():
        clean_recon = _reconstruct(inputs, kernel)
        clean_correct = (classify(clean_recon) == input_labels).double()
        for attack in ATTACKS:
            targeted = attack == "latent"
            classified = attack in ("latent", "latent-classifier")
            for lam in LAMBDAS:
                # all trials in one batch: trial t holds rows t * IMAGES ... (t + 1) * IMAGES - 1
                generator = torch.Generator().manual_seed(zlib.crc32(f"{model}/{attack}/{lam}".encode()))
                x, x_t = inputs.repeat(TRIALS, 1, 1, 1), targets.repeat(TRIALS, 1, 1, 1)
                recon, y = clean_recon.repeat(TRIALS, 1, 1, 1), input_labels.repeat(TRIALS)
                noise = torch.randn(x.shape, generator=generator)
                adversarial = (x + noise * (lam / noise.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)).clamp(0, 1)
                adv_recon = _reconstruct(adversarial, kernel)
                nan = torch.full((len(x),), float("nan"), dtype=torch.float64)
                columns = {
                    "attack_loss": l2_distance(_encode(adversarial), _encode(x_t)) if targeted
                    else l2_distance(adv_recon, recon),
                    "l2_delta": l2_distance(adversarial, x),
                    "msssim_input_adv": ms_ssim(x, adversarial, settings),
                    "msssim_target_advrecon": ms_ssim(x_t, adv_recon, settings) if targeted else nan,
                    "msssim_input_advrecon": ms_ssim(x, adv_recon, settings),
                    "msssim_recon_advrecon": ms_ssim(recon, adv_recon, settings),
                    "l2_recon_advrecon": l2_distance(adv_recon, recon),
                    "l2_target_advrecon": l2_distance(adv_recon, x_t) if targeted else nan,
                    "latent_target_distance": l2_distance(_encode(adversarial), _encode(x_t)) if targeted else nan,
                    "classifier_correct": (classify(adv_recon) == y).double() if classified else nan,
                    "clean_classifier_correct": clean_correct.repeat(TRIALS) if classified else nan,
                    "msssim_input_recon": ms_ssim(x, recon, settings),
                    "mse_input_recon": (x - recon).pow(2).flatten(1).mean(1),
                    "latent_shift": l2_distance(_encode(adversarial), _encode(x)),
                    "relative_code_shift": l2_distance(_encode(adversarial), _encode(x)) / separation.repeat(TRIALS),
                }
                columns = {k: v.tolist() for k, v in columns.items()}
                for row in range(len(x)):
                    i = row % IMAGES
                    rows.append({
                        "model": model, "attack": attack, "lambda": lam, "trial": row // IMAGES, "image_id": i,
                        "target_id": int(target_index[i]) if targeted else -1, "label": int(input_labels[i]),
                        "target_label": int(labels[target_index[i]]) if targeted else -1,
                        **{k: v[row] for k, v in columns.items()},
                    })
                grid = torch.stack([x, recon, adversarial, adv_recon,
                                    x_t if targeted else torch.full_like(x, float("nan"))], dim=1)
                examples[f"{model}::{attack}::{lam:g}"] = grid[:2].numpy()
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(directory / "results.csv", index=False)
    np.savez(directory / "examples.npz", **examples)
    flags = [{"model": "blur-7", "attack": "max-damage", "lambda": 3.0, "flag": "zero-gradient", "count": 2,
              "of": IMAGES * TRIALS, "message": "the gradient was exactly zero on 2 samples"}]
    write_manifest(directory, command="audit", config={"lambdas": list(LAMBDAS), "trials": TRIALS},
                   seed=0, device="cpu", metrics=settings.as_dict(), flags=flags)
    return directory


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory, mnist_test):
    return _write_audit(tmp_path_factory.mktemp("audit") / "audit-a", mnist_test,
                        MSSSIMSettings.from_preset("small"))


def _direct(results, model, attack, lam, column):
    """Mean over rows, trial spread, and a percentile bootstrap over images written out independently."""
    rows = results[(results.model == model) & (results.attack == attack) & (results["lambda"] == lam)]
    trial_means = np.array([rows.loc[rows.trial == t, column].mean() for t in range(TRIALS)])
    images = sorted(rows["image_id"].unique())
    sums = np.array([rows.loc[rows.image_id == i, column].sum() for i in images])
    counts = np.array([(rows.image_id == i).sum() for i in images])
    picks = np.random.default_rng(0).integers(0, len(images), size=(2000, len(images)))
    low, high = np.percentile(sums[picks].sum(1) / counts[picks].sum(1), [2.5, 97.5])
    return rows[column].mean(), trial_means.std(ddof=1), low, high


def test_load_results_types(audit_dir):
    audit = load_results(audit_dir)
    assert len(audit.results) == len(MODELS) * len(ATTACKS) * len(LAMBDAS) * TRIALS * IMAGES
    assert audit.results["trial"].dtype == np.int64 and audit.results["lambda"].dtype == float
    assert audit.metric_settings["window_size"] == 7
    assert set(audit.examples()) == {(m, a, f"{lam:g}") for m in MODELS for a in ATTACKS for lam in LAMBDAS}


def test_table1_matches_a_direct_computation(audit_dir, mnist_test):
    results = load_results(audit_dir).results
    table = table1_statistics(results)
    assert list(table.index) == list(MODELS)
    # clean fidelity, then every attack: two metrics x two lambdas; each (mean, low, high, n, rows, trial_std,
    # nan_rows)
    assert table.shape == (len(MODELS), (1 + len(ATTACKS) * 2 * len(LAMBDAS)) * 7)
    for model, kernel in MODELS.items():
        clean = ms_ssim(mnist_test.images[:IMAGES], _reconstruct(mnist_test.images[:IMAGES], kernel),
                        MSSSIMSettings.from_preset("small"))
        assert table.loc[model, ("clean", "msssim_input_recon", "", "mean")] == pytest.approx(float(clean.mean()))
        # every trial audits the same images: the clean value is counted once per image, without a trial spread
        assert table.loc[model, ("clean", "msssim_input_recon", "", "n")] == IMAGES
        assert np.isnan(table.loc[model, ("clean", "msssim_input_recon", "", "trial_std")])
    # n counts images (the independent units), not rows
    assert (table.drop(columns="clean", level="attack").xs("n", axis=1, level="statistic") == IMAGES).all().all()
    assert set(table["latent"].columns.get_level_values("metric")) == {"msssim_target_advrecon", "msssim_input_adv"}
    assert set(table["max-damage"].columns.get_level_values("metric")) == {"msssim_recon_advrecon",
                                                                           "msssim_input_adv"}
    assert set(table["noise-plugin"].columns.get_level_values("metric")) == {"msssim_recon_advrecon",
                                                                             "msssim_input_adv"}
    for model in MODELS:
        for attack, column in (("latent", "msssim_target_advrecon"), ("max-damage", "msssim_recon_advrecon"),
                               ("max-damage", "msssim_input_adv")):
            for lam in LAMBDAS:
                mean, std, low, high = _direct(results, model, attack, lam, column)
                cell = table.loc[model, (attack, column, f"{lam:g}")]
                assert cell["mean"] == pytest.approx(mean, abs=1e-12)
                assert cell["trial_std"] == pytest.approx(std, abs=1e-12)
                assert (cell["low"], cell["high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
                assert cell["low"] < cell["mean"] < cell["high"]
    # the numbers carry signal: more noise, less similarity between clean and attacked reconstructions
    assert (table[("max-damage", "msssim_recon_advrecon", "1", "mean")]
            > table[("max-damage", "msssim_recon_advrecon", "3", "mean")]).all()


def test_table3_matches_a_direct_computation(audit_dir):
    results = load_results(audit_dir).results
    table = table3_statistics(results)
    assert set(table.columns.get_level_values("attack")) == {"clean", "latent", "latent-classifier"}
    for model in MODELS:
        clean = results[(results.model == model) & (results.attack == "latent") & (results["lambda"] == 1.0)]
        trial_means = clean.groupby("trial")["clean_classifier_correct"].mean().to_numpy() * 100
        assert table.loc[model, ("clean", "clean_classifier_correct", "", "mean")] == pytest.approx(trial_means.mean())
        for lam in LAMBDAS:
            mean, std, low, high = _direct(results, model, "latent-classifier", lam, "classifier_correct")
            cell = table.loc[model, ("latent-classifier", "classifier_correct", f"{lam:g}")]
            assert cell["mean"] == pytest.approx(100 * mean)
            assert cell["trial_std"] == pytest.approx(100 * std)
            assert (cell["low"], cell["high"]) == (pytest.approx(100 * low), pytest.approx(100 * high))
    without_classifier = results.assign(classifier_correct=np.nan, clean_classifier_correct=np.nan)
    assert table3_statistics(without_classifier) is None


@hypothesis_settings(max_examples=20, deadline=None)
@given(values=st.lists(st.floats(0, 1), min_size=6, max_size=6), trials=st.integers(2, 3))
def test_cell_statistics_counts_images_and_keeps_the_trial_spread(values, trials):
    frame = pd.DataFrame({"model": "m", "attack": "a", "lambda": 1.0, "image_id": [i // trials for i in range(6)],
                          "trial": [i % trials for i in range(6)], "value": values})
    trial_means = [np.mean([v for i, v in enumerate(values) if i % trials == t]) for t in range(trials)]
    stats = cell_statistics(frame, "value").iloc[0]
    assert stats["mean"] == pytest.approx(np.mean(values))
    assert stats["trial_std"] == pytest.approx(np.std(trial_means, ddof=1), abs=1e-12)
    assert stats["trials"] == trials and stats["n"] == 6 // trials and stats["rows"] == 6 // trials
    assert stats["low"] - 1e-12 <= stats["mean"] <= stats["high"] + 1e-12


def test_build_report_writes_everything(audit_dir, tmp_path):
    written = build_report(audit_dir, tmp_path / "report")
    for stem in ("table1_msssim", "table3_latent_classifier", "summary"):
        for fmt in ("csv", "md", "tex", "html"):
            assert written[f"{stem}.{fmt}"].stat().st_size > 0
    for name in ("fig2_attack_loss.png", "fig3_examples_latent_lambda1.png", "fig3_examples_max-damage_lambda3.png",
                 "report.html", "manifest.json"):
        assert written[name].is_file(), name
    csv = pd.read_csv(written["table1_msssim.csv"], index_col=0)
    for statistic in ("mean", "low", "high", "trial_std"):
        assert f"latent/msssim_target_advrecon/1/{statistic}" in csv.columns
    assert all(pd.api.types.is_float_dtype(csv[c]) for c in csv.columns if c.endswith(("/mean", "/low", "/trial_std")))
    assert (csv.filter(regex="/n$") == IMAGES).all().all()
    table1_md = written["table1_msssim.md"].read_text()
    # cells are "mean [low, high]"; the count of images most cells share is said once in the caption
    assert " ± " not in table1_md and re.search(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", table1_md)
    assert f"cells without n average {IMAGES} images" in table1_md
    assert "(n=" not in table1_md  # the clean column counts the same images as the attacked ones
    assert written["fidelity.csv"].is_file() and written["robustness_vs_fidelity.png"].is_file()
    flags = pd.read_csv(written["sanity_flags.csv"])
    assert flags[["model", "flag", "count"]].values.tolist() == [["blur-7", "zero-gradient", 2]]
    page = written["report.html"].read_text()
    assert "Sanity flags" in page and "the gradient was exactly zero on 2 samples" in page
    assert r"$\pm$" not in written["table1_msssim.tex"].read_text()
    page = written["report.html"].read_text()
    assert page.count("data:image/png;base64,") == 2 + len(ATTACKS) * len(LAMBDAS)  # Fig. 2, fidelity, Fig. 3
    assert '"window_size"' not in page and ">window_size<" in page  # the settings table is there
    manifest = json.loads(written["manifest.json"].read_text())
    assert manifest["metrics"]["window_size"] == 7 and manifest["command"] == "report"


def test_report_cli(audit_dir, tmp_path):
    result = CliRunner().invoke(main, ["report", str(audit_dir), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "report.html").is_file()
    help_text = CliRunner().invoke(main, ["report", "--help"]).output
    assert "Examples" in help_text


@pytest.mark.parametrize("problem", ["missing", "no-csv", "garbage", "wrong-columns"])
def test_report_cli_bad_input_exits_2(tmp_path, problem):
    directory = tmp_path / "audit"
    if problem != "missing":
        directory.mkdir()
        write_manifest(directory, command="audit", config={}, seed=0, device="cpu", metrics={})
    if problem == "garbage":
        (directory / "results.csv").write_bytes(b'\x00\xff"unterminated\n1,2\n3,4,5,6\n')
    if problem == "wrong-columns":
        (directory / "results.csv").write_text("a,b\n1,2\n")
    result = CliRunner().invoke(main, ["report", str(directory)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_compare_merges_audits_with_equal_settings(audit_dir, tmp_path, mnist_test):
    other = _write_audit(tmp_path / "audit-b", mnist_test, MSSSIMSettings.from_preset("small"),
                         models={"blur-3": 3, "blur-5": 5})
    table = compare([audit_dir, other])
    assert list(table.index) == ["blur-3 [audit-a]", "blur-7", "blur-3 [audit-b]", "blur-5"]
    single = table1_statistics(load_results(other).results)
    pd.testing.assert_series_equal(table.loc["blur-5"], single.loc["blur-5"], check_names=False)
    written = write_comparison([audit_dir, other], tmp_path / "comparison")
    assert written["comparison_table1_msssim.csv"].is_file() and written["report.html"].is_file()


def test_compare_refuses_different_metric_settings(audit_dir, tmp_path, mnist_test):
    other = _write_audit(tmp_path / "audit-paper", mnist_test, MSSSIMSettings.from_preset("paper"),
                         models={"blur-3": 3})
    with pytest.raises(AerobustError, match="not comparable"):
        compare([audit_dir, other])
    result = CliRunner().invoke(main, ["compare", str(audit_dir), str(other), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "window_size" in result.output


def test_report_of_a_training_run_draws_every_loss_term(tmp_path, mnist_train_small):
    from aerobust.architectures import MLPAutoencoder
    from aerobust.report.training import read_history
    from aerobust.training import train

    torch.manual_seed(0)
    run = tmp_path / "run"
    train("gmm-dae", MLPAutoencoder(hidden=(16,)), mnist_train_small.subset(torch.arange(0, 4000, 20)), epochs=2,
          batch_size=100, quiet=True, out_dir=run)
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0, result.output
    history = read_history(run)
    summary = pd.read_csv(run / "report" / "history_summary.csv")
    assert set(summary["loss term"]) == set(history.columns) - {"epoch", "epoch_time_s"} >= {"rec", "ks", "cv", "total"}
    last = summary.set_index("loss term")["last"]
    assert last["total"] == pytest.approx(history["total"].iloc[-1])
    for suffix in ("png", "pdf"):
        assert (run / "report" / f"training_curves.{suffix}").stat().st_size > 1000
    assert "\\toprule" in (run / "report" / "history_summary.tex").read_text()
    (run / "history.jsonl").write_text("{not json\n")
    broken = CliRunner().invoke(main, ["report", str(run)])
    assert broken.exit_code == 2 and "not JSON" in broken.output and "Traceback" not in broken.output


def test_attack_panels_and_the_ablation_layout(audit_dir, tmp_path):
    from aerobust.report import ablation_order, attack_panels, table2_statistics

    results = load_results(audit_dir).results
    table1 = table1_statistics(results)
    panels = attack_panels(table1)
    assert list(panels) == ["latent", "max-damage", "latent-classifier", "noise-plugin"]
    for attack, panel in panels.items():  # clean fidelity first, then only that attack's columns, same numbers
        assert set(panel.columns.get_level_values("attack")) == {"clean", attack}
        assert panel.equals(table1[panel.columns])
    assert ablation_order(["AE", "coupled-KS", "GMM-DAE", "augmented (no coupling)"]) == \
        ["GMM-DAE", "augmented (no coupling)", "coupled-KS"]
    assert ablation_order(["blur-3", "blur-7"]) is None and ablation_order(["GMM-DAE", "vae"]) is None
    table2 = table2_statistics(table1, results, ["blur-7", "blur-3"])
    assert list(table2.index) == ["blur-7", "blur-3"]
    assert list(dict.fromkeys(table2.columns.get_level_values("metric"))) == \
        ["msssim_target_advrecon", "msssim_recon_advrecon", "msssim_input_recon"]
    assert table2.loc["blur-3", ("latent", "msssim_target_advrecon", "1", "mean")] == \
        pytest.approx(_direct(results, "blur-3", "latent", 1.0, "msssim_target_advrecon")[0])
    # the blur models are not named as ablation rows: Table 2 only when asked
    build_report(audit_dir, tmp_path / "plain")
    assert not (tmp_path / "plain" / "table2_ablation.tex").exists()
    result = CliRunner().invoke(main, ["report", str(audit_dir), "--out", str(tmp_path / "t2"), "--table2"])
    assert result.exit_code == 0, result.output
    latex = (tmp_path / "t2" / "table2_ablation.tex").read_text()
    assert "\\toprule" in latex and "\\caption{Ablation" in latex and "$\\downarrow$" in latex
    assert (tmp_path / "t2" / "table1_msssim_latent.tex").is_file()


def test_every_table_of_a_fresh_report_compiles_and_fits_a_text_width(audit_dir, tmp_path):
    from tests.latex import check_tables, require_pdflatex

    require_pdflatex()
    build_report(audit_dir, tmp_path / "report")
    files = sorted((tmp_path / "report").glob("*.tex"))
    assert len(files) >= 10
    assert check_tables(files, tmp_path / "latex") == []
    # one panel per attack fits the text width without being scaled down
    panel = (tmp_path / "report" / "table1_msssim_latent.tex").read_text()
    assert "\\resizebox{\\ifdim\\width>\\linewidth" in panel


def test_results_written_before_budgets_read_lambda_as_the_radius(audit_dir, tmp_path):
    old = tmp_path / "old-audit"
    shutil.copytree(audit_dir, old)
    frame = pd.read_csv(old / "results.csv")
    frame.drop(columns="radius").to_csv(old / "results.csv", index=False)
    results = load_results(old).results
    assert (results["radius"] == results["lambda"]).all() and len(results) == len(frame)


def test_figures_name_lambda_in_its_budget_unit(audit_dir):
    """An L-inf budget in 8-bit levels reads "16/255" on every figure, never a bare "16"."""
    from aerobust.report.figures import attack_budget, attack_loss_figure, example_grid_figure, \
        robustness_fidelity_figure
    from aerobust.threat import lambda_with_unit

    audit = load_results(audit_dir)
    manifest = {"attacks": {attack: {"budget": "linf-255"} for attack in audit.results["attack"].unique()}}
    assert attack_budget(manifest, "latent") == "linf-255" and attack_budget({}, "latent") is None
    assert lambda_with_unit("16", "linf-255") == "16/255 (L-inf)" and lambda_with_unit("0.5", None) == "0.5 (L2)"
    loss = attack_loss_figure(audit.results, manifest)
    assert all("8-bit levels" in axis.get_xlabel() for axis in loss.axes if axis.get_visible())
    fidelity = robustness_fidelity_figure(audit.results, manifest)
    labels = [text.get_text() for axis in fidelity.axes for text in axis.texts]
    assert labels and all(re.fullmatch(r"λ = [\d.e+-]+/255 \(L-inf\)", label) for label in labels), labels
    examples = audit.examples()
    model, attack, lam = next(iter(examples))
    grid = example_grid_figure(examples, attack, lam, budget="linf-255")
    assert grid._suptitle.get_text().endswith(f"λ = {lambda_with_unit(lam, 'linf-255')}")
