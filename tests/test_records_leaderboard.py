"""Records of an audit, their schema, and `aerobust leaderboard`; the new attacks in a VAE audit."""
import copy
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from aerobust import save_checkpoint
from aerobust.architectures import MLPAutoencoder
from aerobust.audit import Audit, AuditConfig, ModelSpec
from aerobust.cli import main
from aerobust.errors import AerobustError
from aerobust.records import leaderboard_table, load_schema, schema_errors, validate_record, write_records
from aerobust.report.analyses import report_tables
from tests.conftest import MNIST_TEST_SPEC

NEW_ATTACKS = ("latent", "latent-kl", "latent-skl", "max-kl", "jacobian", "universal", "max-damage")


def _vae_checkpoint(directory, seed):
    torch.manual_seed(seed)
    model = MLPAutoencoder(input_shape=(1, 32, 32), latent_dim=4, hidden=(16,), variational=True)
    return save_checkpoint(directory / f"vae{seed}.pt", model, architecture="mlp-vae-32",
                           arch_kwargs={"hidden": [16], "latent_dim": 4}, defense="vae")


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    """Two audits of two tiny VAE checkpoints under one protocol (every new attack, lambda 0 for AUDDC)."""
    root = tmp_path_factory.mktemp("audits")
    folders = []
    for seed in (0, 1):
        config = AuditConfig(models=[ModelSpec(f"vae{seed}", checkpoint=str(_vae_checkpoint(root, seed)))],
                             data=MNIST_TEST_SPEC, pad_to=32, attacks=list(NEW_ATTACKS), lambdas=[0.0, 1.0],
                             images=4, trials=2, seed=3, classifier_epochs=1, classifier_images=200, examples=2,
                             attack_options={a: {"steps": 4} for a in NEW_ATTACKS if a != "jacobian"})
        Audit(config, root / f"audit{seed}", device="cpu", quiet=True).run()
        write_records(root / f"audit{seed}")
        folders.append(root / f"audit{seed}")
    return folders


def test_every_new_attack_runs_in_a_vae_audit_and_the_record_validates(audits):
    results = pd.read_csv(audits[0] / "results.csv")
    assert set(results["attack"]) == set(NEW_ATTACKS)
    assert results.groupby("attack").size().eq(2 * 2 * 4).all()
    record = json.loads((audits[0] / "records" / "vae0" / "record.json").read_text())
    assert schema_errors(record, load_schema()) == []
    assert record["model"]["weights_sha256"] and record["model"]["defense"] == "vae"
    assert record["auddc"] is not None and record["auddc"]["lambdas"] == "0, 1"
    cells = {(c["attack"], c["metric"], c["lambda"]) for c in record["headline"]}
    assert ("latent-kl", "msssim_target_advrecon", 1.0) in cells and ("max-kl", "msssim_recon_advrecon", 1.0) in cells
    for cell in record["headline"]:
        assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"] and cell["images"] == 4
    tables = report_tables(results, ["msssim_recon_advrecon", "l2_recon_advrecon"])
    assert tables["auddc"]["rows"].iloc[0] == 2 * 2 * 4 and 0 < tables["universal_share"]["share"].iloc[0]


def test_schema_violations_are_reported():
    schema = load_schema()
    assert "headline" in schema["required"]
    record = {"schema": "aerobust-record", "schema_version": 1}
    errors = schema_errors(record, schema)
    assert any("lacks the field 'model'" in e for e in errors)
    with pytest.raises(AerobustError, match="version"):
        validate_record({"schema": "aerobust-record", "schema_version": 99})
    with pytest.raises(AerobustError, match="not an aerobust record"):
        validate_record({"foo": 1})


def test_a_tampered_record_fails_validation(audits):
    record = json.loads((audits[0] / "records" / "vae0" / "record.json").read_text())
    broken = copy.deepcopy(record)
    broken["headline"][0]["better"] = "sideways"
    broken["protocol"]["trials"] = "two"
    del broken["versions"]
    errors = schema_errors(broken, load_schema())
    assert len(errors) == 3 and any("sideways" in e for e in errors)


def test_leaderboard_over_two_audits(audits, tmp_path):
    out = tmp_path / "lb"
    result = CliRunner().invoke(main, ["leaderboard", str(audits[0]), str(audits[1]), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "leaderboard.csv")
    assert set(table["model"]) == {"vae0", "vae1"}
    key = "max-damage msssim_recon_advrecon λ=1"
    means = [float(cell.split(" ")[0]) for cell in table[key]]
    assert means == sorted(means, reverse=True)  # higher MS-SSIM under maximum damage = more robust first
    # the second shares rank 1 unless its interval lies wholly below the first's (exact values: the
    # printed cells are rounded and can tie where the numbers do not)
    cells = {}
    for audit in audits:
        record = json.loads(next(audit.rglob("record.json")).read_text())
        cells[record["model"]["label"]] = next(c for c in record["headline"] if
                                               (c["attack"], c["metric"], c["lambda"]) == ("max-damage",
                                                                                          "msssim_recon_advrecon", 1.0))
    first, second = (cells[model] for model in table["model"])
    separated = first["ci_low"] > second["ci_high"]
    assert list(table["rank"]) == ([1, 2] if separated else [1, 1])
    assert table["clean MS-SSIM(x, x̃)"].str.match(r"0\.\d{3} \[").all()  # fidelity beside every rank
    assert "Ranked by" in (out / "leaderboard.md").read_text() and (out / "manifest.json").is_file()
    assert "<table" in (out / "leaderboard.html").read_text()


def test_leaderboard_refuses_mixed_protocols_unless_asked(audits, tmp_path):
    records = [json.loads(p.read_text()) for p in sorted(audits[0].rglob("record.json"))
               + sorted(audits[1].rglob("record.json"))]
    records[1]["protocol"] = {**records[1]["protocol"], "trials": 5, "id": "other"}
    with pytest.raises(AerobustError, match="different protocols.*trials"):
        leaderboard_table(records)
    table, _ = leaderboard_table(records, mix_protocols=True)
    assert "protocol" in table.columns
    with pytest.raises(AerobustError, match="unknown leaderboard column"):
        leaderboard_table(records[:1], sort="nothing")


def test_leaderboard_bad_input_is_one_line_exit_2(tmp_path):
    (tmp_path / "junk.json").write_text("{not json")
    command = [sys.executable, "-m", "aerobust", "leaderboard", str(tmp_path / "junk.json"), "--out", str(tmp_path / "o")]
    process = subprocess.run(command, capture_output=True, text=True)
    assert process.returncode == 2 and "Traceback" not in process.stderr
    assert "not readable JSON" in process.stderr and len(process.stderr.strip().splitlines()) == 1


def test_margin_command_writes_the_distribution_per_model(tmp_path):
    checkpoint = _vae_checkpoint(tmp_path, 2)
    out = tmp_path / "margins"
    result = CliRunner().invoke(main, ["margin", "--checkpoint", f"v={checkpoint}", "--data", MNIST_TEST_SPEC,
                                       "--pad", "32", "--images", "3", "--r", "2", "--lambda-max", "2",
                                       "--iterations", "3", "--samples", "4", "--attack-option",
                                       "max-damage.steps=3", "--device", "cpu", "--quiet", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    margins = pd.read_csv(out / "margins.csv")
    assert len(margins) == 3 and set(margins["model"]) == {"v"}
    summary = pd.read_csv(out / "margin_summary.csv")
    assert summary["broken"].iloc[0] + summary["censored"].iloc[0] == 3
    assert (out / "fig_margins.png").is_file() and json.loads((out / "manifest.json").read_text())["command"] == "margin"


def test_list_names_the_new_attacks_and_auddc():
    attacks = CliRunner().invoke(main, ["list", "attacks"]).output
    assert all(f"  {name} " in attacks for name in ("latent-kl", "latent-skl", "max-kl", "jacobian", "universal"))
    assert "  auddc " in CliRunner().invoke(main, ["list", "metrics"]).output


def test_sort_by_typed_key_and_compare_writes_paired_tests(audits, tmp_path):
    from aerobust.report import write_comparison

    records = [json.loads(p.read_text()) for a in audits for p in sorted(a.rglob("record.json"))]
    table, key = leaderboard_table(records, sort="max-kl:msssim_recon_advrecon:1")
    assert key == "max-kl msssim_recon_advrecon λ=1"
    means = [float(cell.split(" ")[0]) for cell in table[key]]
    assert means == sorted(means, reverse=True)
    written = write_comparison([str(a) for a in audits], tmp_path / "cmp")
    paired = pd.read_csv(written["comparison_paired_tests.csv"])
    assert paired["paired"].all() and (paired["images"] == 4).all()
    assert {"p_holm", "holds", "ci_low", "ci_high"} <= set(paired.columns)


def test_fidelity_columns_enter_the_record_when_the_audit_writes_them(audits, tmp_path):
    import shutil

    from aerobust.records import build_records

    copy_dir = tmp_path / "audit"
    shutil.copytree(audits[0], copy_dir)
    results = pd.read_csv(copy_dir / "results.csv")
    results["msssim_input_recon"] = 0.5 + 0.01 * results["image_id"] % 7
    results.to_csv(copy_dir / "results.csv", index=False)
    (record,) = build_records(copy_dir)
    (cell,) = [c for c in record["headline"] if c["metric"] == "msssim_input_recon"]
    assert (cell["attack"], cell["better"], cell["images"], cell["rows"]) == ("clean", "higher", 4, 8)


def test_shared_ranks_follow_the_intervals_and_marks_name_low_fidelity():
    from aerobust.records import _marks, shared_ranks

    def cell(mean, low, high):
        return {"mean": mean, "ci_low": low, "ci_high": high}

    cells = [cell(0.9, 0.85, 0.95), cell(0.88, 0.83, 0.93), cell(0.5, 0.45, 0.55), None]
    ranks = shared_ranks(cells, higher_is_better=True)
    assert ranks[:3] == [1, 1, 3] and np.isnan(ranks[3])
    assert shared_ranks(cells[:3], higher_is_better=False) == [2, 2, 1]
    fidelity = {"attack": "clean", "metric": "msssim_input_recon", "lambda": 0.0, **cell(0.5, 0.45, 0.55)}
    record = {"headline": [fidelity], "flags": [{"flag": "degenerate-model"}]}
    assert "low fidelity" in _marks(record) and "degenerate" in _marks(record)
    assert _marks({"headline": [{**fidelity, "mean": 0.9}], "flags": []}) == ""


def test_leaderboard_refuses_edited_and_repeated_records_and_says_what_it_verified(audits, tmp_path):
    runner = CliRunner()
    source = sorted(audits[0].rglob("record.json"))[0]
    record = json.loads(source.read_text())
    # a mean edited by hand, the audit folder still there: the rebuilt headline differs
    edited = copy.deepcopy(record)
    edited["headline"][0]["mean"] = 0.999
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    result = runner.invoke(main, ["leaderboard", str(tmp_path / "edited.json"), "--out", str(tmp_path / "lb1")])
    assert result.exit_code == 2 and "headline numbers differ" in result.output
    # trials changed under the old protocol id: the block no longer hashes to its id
    relabelled = copy.deepcopy(record)
    relabelled["protocol"]["trials"] = 10
    (tmp_path / "relabelled.json").write_text(json.dumps(relabelled))
    result = runner.invoke(main, ["leaderboard", str(tmp_path / "relabelled.json"), "--out", str(tmp_path / "lb2")])
    assert result.exit_code == 2 and "does not hash to its protocol id" in result.output
    # the same record twice
    result = runner.invoke(main, ["leaderboard", str(source), str(source), "--out", str(tmp_path / "lb3")])
    assert result.exit_code == 2 and "more than once" in result.output
    # a record away from its audit folder is ranked, and the table says how little was checked
    moved = copy.deepcopy(record)
    moved["source"]["audit_dir"] = str(tmp_path / "gone")
    (tmp_path / "away").mkdir()
    (tmp_path / "away" / "record.json").write_text(json.dumps(moved))
    result = runner.invoke(main, ["leaderboard", str(tmp_path / "away" / "record.json"), str(audits[1]),
                                  "--out", str(tmp_path / "lb4")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    verified = pd.read_csv(tmp_path / "lb4" / "leaderboard.csv").set_index("model")["verified"]
    assert verified["vae0"].startswith("protocol id only") and verified["vae1"] == "results hash and headline"


def test_compare_refuses_other_budgets_unless_mixing_is_asked(audits, tmp_path):
    import shutil

    other = tmp_path / "linf-audit"
    shutil.copytree(audits[1], other)
    manifest = json.loads((other / "manifest.json").read_text())
    for settings in manifest["attacks"].values():
        settings["budget"] = "linf-255"
    (other / "manifest.json").write_text(json.dumps(manifest))
    runner = CliRunner()
    refused = runner.invoke(main, ["compare", str(audits[0]), str(other), "--out", str(tmp_path / "c1")])
    assert refused.exit_code == 2 and "different protocols" in refused.output and "attacks" in refused.output
    mixed = runner.invoke(main, ["compare", str(audits[0]), str(other), "--out", str(tmp_path / "c2"),
                                 "--mix-protocols"])
    assert mixed.exit_code == 0, mixed.output
