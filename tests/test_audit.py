"""The audit runner and `aerobust audit` end to end on real MNIST with a tiny model."""
import json
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from aerobust import save_checkpoint
from aerobust.audit import Audit, AuditConfig, ModelSpec
from aerobust.cli import main
from tests.conftest import MNIST_TEST_SPEC, train_small_ae

FAST = {"steps": 8}  # a weak but real attack keeps the suite fast; strength is the benchmarks' job


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mnist_train_small):
    model = train_small_ae(mnist_train_small.images, steps=150, hidden=(64,))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, model, architecture="mlp-ae-32",
                           arch_kwargs={"hidden": [64], "latent_dim": 10}, defense="ae")


def _config(checkpoint, **overrides):
    settings = dict(models=[ModelSpec("tiny", checkpoint=str(checkpoint))], data=MNIST_TEST_SPEC,
                    pad_to=32, lambdas=[0.5, 1.5], images=5, trials=2, seed=3, classifier_epochs=3,
                    classifier_images=1000, examples=3,
                    attack_options={a: dict(FAST) for a in ("latent", "max-damage", "latent-classifier")})
    settings.update(overrides)
    return AuditConfig(**settings)


def test_interrupted_audit_resumes_to_the_same_table(tmp_path, checkpoint, monkeypatch):
    uninterrupted = Audit(_config(checkpoint), tmp_path / "full", device="cpu", quiet=True).run()
    assert len(uninterrupted) == 3 * 2 * 2 * 5  # attacks x lambdas x trials x images

    calls = {"n": 0}
    real_block = Audit.run_block

    def dying_block(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_block(self, *args, **kwargs)

    monkeypatch.setattr(Audit, "run_block", dying_block)
    with pytest.raises(KeyboardInterrupt):
        Audit(_config(checkpoint), tmp_path / "resumed", device="cpu", quiet=True).run()
    assert len(list((tmp_path / "resumed" / "blocks").glob("*.csv"))) == 2
    monkeypatch.setattr(Audit, "run_block", real_block)
    resumed = Audit(_config(checkpoint), tmp_path / "resumed", device="cpu", quiet=True).run()
    pd.testing.assert_frame_equal(resumed, uninterrupted)
    assert (tmp_path / "resumed" / "results.csv").read_bytes() == (tmp_path / "full" / "results.csv").read_bytes()


def test_results_are_sane_and_follow_the_threat(tmp_path, checkpoint):
    results = Audit(_config(checkpoint), tmp_path / "a", device="cpu", quiet=True).run()
    assert (results["l2_delta"] <= results["lambda"] * (1 + 1e-5) + 1e-6).all()
    for column in ("msssim_input_adv", "msssim_input_advrecon", "msssim_recon_advrecon"):
        assert results[column].between(-1, 1).all()
    latent = results[results.attack == "latent"]
    assert (latent.target_label != latent.label).all() and latent.msssim_target_advrecon.notna().all()
    assert results[results.attack == "max-damage"].target_id.eq(-1).all()
    assert results.classifier_correct.isin([0.0, 1.0]).all()
    # a larger budget moves the input further and damages more (mean over the block)
    damage = results[results.attack == "max-damage"].groupby("lambda").attack_loss.mean()
    assert damage[1.5] > damage[0.5]


def test_changed_config_is_refused_in_the_same_folder(tmp_path, checkpoint):
    Audit(_config(checkpoint, attacks=["max-damage"], lambdas=[0.5]), tmp_path, device="cpu", quiet=True).run()
    with pytest.raises(Exception, match="different configuration .*lambdas"):
        Audit(_config(checkpoint, attacks=["max-damage"], lambdas=[1.0]), tmp_path, device="cpu", quiet=True).run()


def test_model_labels():
    assert ModelSpec.parse("runs/coupled/model.pt", "checkpoint").label == "coupled"
    assert ModelSpec.parse("ckpt/ae-seed1.pt", "checkpoint").label == "ae-seed1"
    assert ModelSpec.parse("Ours=runs/x/model.pt", "checkpoint") == ModelSpec("Ours", checkpoint="runs/x/model.pt")
    assert ModelSpec.parse("mypkg.models:build", "model").label == "build"


def _cli(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_cli_end_to_end_on_real_mnist(tmp_path, checkpoint):
    out = tmp_path / "audit"
    result = _cli(["audit", "--checkpoint", f"tiny={checkpoint}", "--data", MNIST_TEST_SPEC, "--pad", "32",
                   "--images", "4", "--trials", "2", "--lambdas", "0.5,1", "--attack-option", "*.steps=5",
                   "--seed", "1", "--device", "cpu", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for pattern in ("results.csv", "manifest.json", "report.html", "*.md", "*.tex", "*.png"):
        assert list(out.rglob(pattern)), f"no {pattern} written"
    assert len(pd.read_csv(out / "results.csv")) == 3 * 2 * 2 * 4


@pytest.mark.parametrize("args, message", [
    (["--attacks", "nope"], "unknown attacks 'nope'"),
    (["--data", "cifar"], "unknown datasets 'cifar'"),
    (["--lambdas", "1,-2"], "lambdas must be finite and >= 0"),
    (["--lambdas", "one"], "--lambdas must be comma-separated numbers"),
    (["--images", "100000"], "larger than"),
    (["--no-pad"], "expects 1x32x32; fit them with --pad"),
    (["--data", "mnist"], "is not available under"),
    (["--missing-checkpoint"], "does not exist"),
    (["--garbage-checkpoint"], "not a readable weights file"),
])
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, checkpoint, args, message, monkeypatch):
    monkeypatch.setenv("AEROBUST_DATA", str(tmp_path / "empty"))
    base = {"--checkpoint": str(checkpoint), "--data": MNIST_TEST_SPEC, "--pad": "32"}
    if args == ["--no-pad"]:
        base.pop("--pad")
        args = []
    elif args == ["--missing-checkpoint"]:
        base["--checkpoint"], args = str(tmp_path / "none.pt"), []
    elif args == ["--garbage-checkpoint"]:
        (tmp_path / "junk.pt").write_bytes(b"junk")
        (tmp_path / "junk.json").write_text('{"architecture": "mlp-ae-32"}')
        base["--checkpoint"], args = str(tmp_path / "junk.pt"), ["--trust-unhashed"]  # past the hash refusal
    argv = ["audit", *sum(([k, v] for k, v in base.items()), []), "--images", "2", "--trials", "1",
            "--quiet", "--out", str(tmp_path / "o"), *args]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


def test_cli_as_a_subprocess(tmp_path):
    listing = subprocess.run([sys.executable, "-m", "aerobust", "list", "architectures"],
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and "mlp-ae-32" in listing.stdout
    bad = subprocess.run([sys.executable, "-m", "aerobust", "audit", "--model", "mlp-ae-32", "--lambdas", "-1",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["Error: lambdas must be finite and >= 0; got [-1.0]"]
    assert "Traceback" not in bad.stderr


def test_demo_runs_end_to_end_and_resumes(tmp_path):
    args = ["demo", "--out", str(tmp_path), "--epochs", "1", "--images", "4", "--trials", "1", "--lambdas", "1",
            "--device", "cpu", "--quiet"]
    assert _cli(args).exit_code == 0
    results = pd.read_csv(tmp_path / "audit" / "results.csv")
    assert sorted(results.model.unique()) == ["AE", "coupled-KS"] and len(results) == 2 * 3 * 4
    assert (tmp_path / "models" / "coupled-ks" / "model.json").is_file()
    assert (tmp_path / "audit" / "report" / "report.html").is_file()
    before = (tmp_path / "audit" / "results.csv").read_bytes()
    assert _cli(args).exit_code == 0  # a rerun resumes: nothing retrained or re-attacked, same table
    assert (tmp_path / "audit" / "results.csv").read_bytes() == before


def test_targets_of_unlabeled_photographs_are_other_photographs():
    from aerobust.audit.plan import Plan
    from aerobust.datasets import load_dataset

    config = AuditConfig(models=[ModelSpec("m", model="mlp-ae-32")], data="skimage", images=8, trials=6, seed=0)
    plan = Plan(load_dataset("skimage", "test"), config, need_targets=True).as_dict()
    # seed 0 drew photograph 5 as its own target before the rule (reports/taef2 at 256 px, 2026-12-04)
    assert all(target != image for row in plan["target_ids"] for target, image in zip(row, plan["image_ids"]))


def test_the_unbounded_check_runs_once_per_model_and_gives_every_lambda_its_flags(tmp_path, checkpoint, monkeypatch):
    from aerobust.attacks import sanity

    calls = []
    real_check = sanity._run_unbounded_check
    monkeypatch.setattr(sanity, "_run_unbounded_check", lambda *args: calls.append(1) or real_check(*args))
    # 2 steps cannot reach the target code from the box's far side: the flag is raised, at every lambda.
    options = {"latent": {"steps": 2, "restarts": 1}}
    config = _config(checkpoint, attacks=["latent"], lambdas=[0.5, 1.0, 1.5], attack_options=options)
    Audit(config, tmp_path / "memo", device="cpu", quiet=True).run()
    assert len(calls) == 1
    flags = [f for f in json.loads((tmp_path / "memo" / "manifest.json").read_text())["flags"]
             if f["flag"] == "unbounded-target-missed"]
    assert sorted(f["lambda"] for f in flags) == [0.5, 1.0, 1.5]
    # Each block alone (no memo across blocks): the same flags.
    for lam in (0.5, 1.5):
        alone = Audit(_config(checkpoint, attacks=["latent"], lambdas=[lam], attack_options=options),
                      tmp_path / f"alone{lam}", device="cpu", quiet=True)
        alone.run()
        flag = [f for f in json.loads((tmp_path / f"alone{lam}" / "manifest.json").read_text())["flags"]
                if f["flag"] == "unbounded-target-missed"]
        assert flag == [f for f in flags if f["lambda"] == lam]
