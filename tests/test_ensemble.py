"""The ensemble attack (attacks/ensemble.py) and `aerobust audit --ensemble` on a tiny model and real MNIST."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from aerobust.attacks import choose_targets
from aerobust.attacks.ensemble import ENSEMBLE_MEMBERS, EnsembleAttack
from aerobust.attacks.optimizers import REFERENCE_CODE_LBFGS
from aerobust.audit import Audit, run_audit
from aerobust.cli import main
from aerobust.errors import AerobustError
from aerobust.registry import ATTACKS
from aerobust.report import build_report
from tests.conftest import MNIST_TEST_SPEC
from tests.test_audit import _config as audit_config
from tests.test_audit import checkpoint  # noqa: F401  (the tiny audited model, a fixture)

# Weak but real members keep the tests fast; the point is the bookkeeping of the worst case.
# One option set serves all members: each takes its own optimizer's settings (PGD's steps, L-BFGS-B's cap).
PGD_FAST, LBFGS_FAST = {"steps": 6}, {"lbfgs_maxiter": 15}
FAST = {**PGD_FAST, **LBFGS_FAST}


@pytest.mark.parametrize("attack_name", ["max-damage", "latent"])
def test_the_worst_case_is_at_least_as_strong_as_every_member(small_ae, mnist_test, attack_name):
    x = mnist_test.images[:3]
    trials, lambdas, seed = 2, [2.0], 5
    inputs = {}
    if attack_name == "latent":
        inputs["targets"] = x[choose_targets(mnist_test.labels[:3], trials, seed)]
    ensemble = EnsembleAttack(attack_name, FAST, extra_restarts=2)
    result = ensemble.sweep(small_ae, x, lambdas, trials, seed, **inputs)
    # Run apart: the default (2 restarts), the default plus 2 more restarts (4 starts of one seed) and the reference.
    default, widened, reference = (
        ATTACKS.create(attack_name, **options).sweep(small_ae, x, lambdas, trials, seed, **inputs)
        for options in (PGD_FAST, {**PGD_FAST, "restarts": 4}, {**LBFGS_FAST, **REFERENCE_CODE_LBFGS}))
    # A member run apart shares its batch with other rows than inside the ensemble, and a row's last bits can
    # depend on its batch's size (the device machine's CPU, torch 2.11: 1e-5 apart on the latent attack's pqn).
    slack = 1e-4
    if ensemble.objective.maximize:
        stronger = lambda a, b: a >= b * (1 - slack)  # noqa: E731
    else:
        stronger = lambda a, b: a <= b * (1 + slack)  # noqa: E731
    for member in (default, widened, reference):
        assert stronger(result.attack_loss, member.attack_loss).all()
    won = result.member
    assert set(won.unique().tolist()) <= {0, 1, 2}
    # Each kept sample is exactly the point of the member it names.
    assert torch.equal(result.attack_loss[won == 2], reference.attack_loss[won == 2])
    assert torch.equal(result.attack_loss[won == 0], default.attack_loss[won == 0])
    assert torch.equal(result.x_adv[won == 2], reference.x_adv[won == 2])
    # A member other than the default wins only by being strictly stronger than the default.
    strictly = (lambda a, b: a > b) if ensemble.objective.maximize else (lambda a, b: a < b)
    assert strictly(result.attack_loss[won != 0], default.attack_loss[won != 0]).all()
    radii = torch.tensor(result.radii)[:, None, None]
    assert (result.delta_norm <= radii * (1 + 1e-5) + 1e-6).all()
    assert result.config["ensemble"]["configs"]["reference-lbfgs"]["optimizer"] == "lbfgs-legacy"


def test_an_ensemble_the_reference_cannot_join_is_one_clear_error():
    with pytest.raises(AerobustError, match="reference L-BFGS-B"):
        EnsembleAttack("max-damage", {"budget": "linf"}, extra_restarts=1)


def _config(checkpoint, **overrides):
    settings = dict(attacks=["max-damage"], lambdas=[2.0], images=3, trials=2, seed=1,
                    attack_options={"max-damage": dict(FAST)}, ensemble_restarts=1)
    return audit_config(checkpoint, **{**settings, **overrides})


def test_audit_records_the_ensemble_and_refuses_to_resume_with_another(tmp_path, checkpoint):
    out = tmp_path / "audit"
    results = Audit(_config(checkpoint), out, device="cpu", quiet=True).run()
    assert set(results["attack_member"]) <= set(ENSEMBLE_MEMBERS)
    assert len(results) == 2 * 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["ensemble_restarts"] == 1
    recorded = manifest["attacks"]["max-damage"]["ensemble"]
    assert recorded["members"] == list(ENSEMBLE_MEMBERS) and recorded["extra_restarts"] == 1
    assert json.loads((out / "audit-fingerprint.json").read_text())["config"]["ensemble_restarts"] == 1
    # Without the ensemble, L-BFGS-B's setting is no option of the PGD attack: the plain audit takes PGD's alone.
    for other, options in ((2, FAST), (None, PGD_FAST)):
        with pytest.raises(AerobustError, match="ensemble_restarts differ"):
            Audit(_config(checkpoint, ensemble_restarts=other, attack_options={"max-damage": dict(options)}), out,
                  device="cpu", quiet=True).run()
    # The same command resumes: every block is done, so the table is read back unchanged, and the report
    # counts the wins of each member.
    again = run_audit(_config(checkpoint), out, device="cpu", quiet=True)
    build_report(out)
    assert again["attack_member"].tolist() == results["attack_member"].tolist()
    wins = pd.read_csv(out / "report" / "ensemble_wins.csv")
    assert wins["rows"].tolist() == [len(results)]
    for member in ENSEMBLE_MEMBERS:
        assert wins[f"{member} wins"].item() == (results["attack_member"] == member).sum()
        assert wins[f"{member} share"].item() == pytest.approx((results["attack_member"] == member).mean())
    assert "Which member of the --ensemble" in (out / "report" / "report.html").read_text()


def test_cli_ensemble_flag_and_its_bad_input(tmp_path, checkpoint):
    common = ["audit", "--checkpoint", f"tiny={checkpoint}", "--data", MNIST_TEST_SPEC, "--pad", "32",
              "--attacks", "max-damage", "--lambdas", "2", "--images", "2", "--trials", "1", "--device", "cpu",
              "--quiet", "--no-report", "--attack-option", "max-damage.steps=4",
              "--attack-option", "max-damage.lbfgs_maxiter=10"]
    done = CliRunner().invoke(main, [*common, "--ensemble", "--ensemble-restarts", "1", "--out", str(tmp_path / "a")])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["config"]["ensemble_restarts"] == 1
    bad = CliRunner().invoke(main, [*common, "--budget", "linf", "--ensemble", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2
    assert "reference L-BFGS-B" in bad.output and "Traceback" not in bad.output


def test_an_ensemble_without_the_reference_lbfgs_runs_and_reports_only_its_members(tmp_path, checkpoint):
    members = ["default", "extra-restarts"]
    out = tmp_path / "audit"
    results = run_audit(_config(checkpoint, ensemble_members=members), out, device="cpu", quiet=True)
    assert set(results["attack_member"]) <= set(members)
    recorded = json.loads((out / "manifest.json").read_text())["attacks"]["max-damage"]["ensemble"]
    assert recorded["members"] == members and "reference-lbfgs" not in recorded["configs"]
    build_report(out)
    wins = pd.read_csv(out / "report" / "ensemble_wins.csv")
    assert not any("reference-lbfgs" in column for column in wins.columns)
    assert wins["default wins"].item() + wins["extra-restarts wins"].item() == len(results)
    # The default and the extra restarts are one sweep: the first is the plain attack's result per sample
    # (to float rounding: the wider sweep's calls hold more rows).
    plain = run_audit(_config(checkpoint, ensemble_restarts=None, attack_options={"max-damage": dict(PGD_FAST)}),
                      tmp_path / "plain", device="cpu", quiet=True)
    won_by_default = results["attack_member"] == "default"
    np.testing.assert_allclose(results.loc[won_by_default, "attack_loss"], plain.loc[won_by_default, "attack_loss"],
                               rtol=1e-5)
    assert (results["attack_loss"] >= plain["attack_loss"] - 1e-6).all()
    with pytest.raises(AerobustError, match="only reference-lbfgs may be left out"):
        EnsembleAttack("max-damage", FAST, extra_restarts=1, members=["default"])


def test_cli_ensemble_without_lbfgs(tmp_path, checkpoint):
    common = ["audit", "--checkpoint", f"tiny={checkpoint}", "--data", MNIST_TEST_SPEC, "--pad", "32",
              "--attacks", "max-damage", "--lambdas", "2", "--images", "2", "--trials", "1", "--device", "cpu",
              "--quiet", "--no-report", "--attack-option", "max-damage.steps=4", "--budget", "linf"]
    done = CliRunner().invoke(main, [*common, "--ensemble", "--ensemble-without-lbfgs", "--out", str(tmp_path / "a")])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["config"]["ensemble_members"] == ["default", "extra-restarts"]
    alone = CliRunner().invoke(main, [*common, "--ensemble-without-lbfgs", "--out", str(tmp_path / "b")])
    assert alone.exit_code == 2 and "give --ensemble too" in alone.output and "Traceback" not in alone.output
