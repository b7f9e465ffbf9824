"""Every defense trains on real MNIST; checkpoints resume exactly; the CLI; fidelity helpers."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from aerobust.adapter import wrap
from aerobust.architectures import MLPAutoencoder
from aerobust.checkpoints import load_checkpoint
from aerobust.cli import main
from aerobust.errors import AerobustError
from aerobust.fidelity import (SmallClassifierFeatures, decode_codes, fitted_gaussian_codes,
                               frechet_distance_inception_v3, frechet_distance_small_classifier,
                               per_mode_samples, prior_from_defense_config)
from aerobust.registry import DEFENSES
from aerobust.report.fidelity import sample_grid_figure
from aerobust.report.writer import save_figure
from aerobust.training import train

DETERMINISTIC = ["ae", "gmm-dae", "augmented", "coupled-ks"]
VARIATIONAL = ["vae", "beta-vae", "beta-tcvae"]
TINY = {"hidden": [64]}


@pytest.fixture(scope="module")
def small_set(mnist_train_small):
    # mnist-5k is sorted by class: draw a seeded subset that holds every digit
    return mnist_train_small.subset(torch.randperm(len(mnist_train_small), generator=torch.Generator().manual_seed(0))[:600])


def test_all_defenses_registered():
    assert set(DETERMINISTIC + VARIATIONAL) <= set(DEFENSES.list())


@pytest.mark.parametrize("defense", DETERMINISTIC + VARIATIONAL)
def test_defense_trains_with_falling_loss(defense, small_set):
    torch.manual_seed(0)
    module = MLPAutoencoder(hidden=(64,), variational=defense in VARIATIONAL)
    result = train(defense, module, small_set, epochs=4, batch_size=100, lr=1e-3, quiet=True)
    totals = [row["total"] for row in result.history]
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in result.history)
    assert totals[-1] < totals[0], totals
    assert result.model is module and not module.training
    expected_terms = {"rec", "total"} | ({"ks", "cv"} if defense in DETERMINISTIC[1:] else set())
    assert expected_terms <= set(result.history[0])
    if defense == "coupled-ks":
        assert {"ks_pair", "adv_code_distance"} <= set(result.history[0])


def test_variational_defense_needs_variational_model(small_set):
    with pytest.raises(AerobustError, match="trains variational autoencoders.*Use --arch mlp-vae-32"):
        train("vae", MLPAutoencoder(hidden=(16,)), small_set, epochs=1, quiet=True)
    with pytest.raises(AerobustError, match="deterministic"):
        train("gmm-dae", MLPAutoencoder(hidden=(16,), variational=True), small_set, epochs=1, quiet=True)
    with pytest.raises(AerobustError, match="has no option coupling"):
        train("gmm-dae", MLPAutoencoder(hidden=(16,)), small_set, epochs=1, quiet=True, coupling=0.5)
    with pytest.raises(AerobustError, match="coupling must lie"):
        train("coupled-ks", MLPAutoencoder(hidden=(16,)), small_set, epochs=1, quiet=True, coupling=1.5)


def test_coupled_covariance_weight_uses_coupled_prior_pairs():
    """Default: the eq. 10 weight is estimated on prior pairs coupled like its target, about as strong as
    GMM-DAE's own covariance weight; ``independent`` is the authors' estimate (about 6x weaker at 0.9)."""
    def weights(defense, **options):
        recipe = DEFENSES.create(defense, **options)
        recipe.setup(wrap(MLPAutoencoder(hidden=(16,)), device="cpu"), dataset_size=1000, batch_size=100,
                     generator=torch.Generator().manual_seed(0))
        return recipe.weights, recipe.describe()["weight_estimate"]

    coupled, described = weights("coupled-ks")
    independent, _ = weights("coupled-ks", cv_weight_pairs="independent")
    gmm, _ = weights("gmm-dae")
    assert "cv: pairs coupled with alpha 0.9" in described
    assert coupled["cv"] == pytest.approx(gmm["cv"], rel=0.25)
    assert coupled["cv"] > 4 * independent["cv"]
    assert {k: coupled[k] for k in ("ks", "ks_pair", "rec")} == {k: independent[k] for k in ("ks", "ks_pair", "rec")}


def test_checkpoint_resume_gives_the_same_weights(small_set, tmp_path):
    common = dict(epochs=2, batch_size=100, lr=1e-3, seed=3, quiet=True, arch_kwargs=TINY, coupling=0.5)
    straight = train("coupled-ks", "mlp-ae-32", small_set, out_dir=tmp_path / "straight", **common)
    first = train("coupled-ks", "mlp-ae-32", small_set, out_dir=tmp_path / "split",
                  **{**common, "epochs": 1})
    assert len(first.history) == 1
    resumed = train("coupled-ks", "mlp-ae-32", small_set, out_dir=tmp_path / "split", resume=True, **common)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [r["total"] for r in resumed.history] == pytest.approx([r["total"] for r in straight.history], rel=1e-6)

    module, sidecar = load_checkpoint(resumed.checkpoint)  # on the CPU; the trained model may be on a GPU
    assert torch.equal(module.state_dict()["code_head.weight"], straight.model.state_dict()["code_head.weight"].cpu())
    assert sidecar["defense"] == "coupled-ks" and sidecar["training"]["epochs_completed"] == 2
    assert sidecar["defense_config"]["options"]["coupling"] == 0.5
    assert set(sidecar["defense_config"]["loss_weights"]) == {"rec", "ks", "ks_pair", "cv"}
    run = tmp_path / "split"
    assert len((run / "history.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "manifest.json").read_text())["epochs_completed"] == 2
    with pytest.raises(AerobustError, match="already holds"):
        train("coupled-ks", "mlp-ae-32", small_set, out_dir=run, **common)
    with pytest.raises(AerobustError, match="different lr"):
        train("coupled-ks", "mlp-ae-32", small_set, out_dir=run, resume=True, **{**common, "lr": 5e-4})


class _Killed(BaseException):
    """Stands for SIGKILL: no ``except Exception`` in the code under test may swallow it."""


def _count_writes(monkeypatch, kill_at: int | None = None) -> list[str]:
    """Patch every write step of a training run (torch.save, os.replace, the manifest) to log itself and, at
    step ``kill_at``, to die half-way: torch.save leaves a truncated file behind, as a killed process does."""
    import os

    import aerobust.training as training

    steps: list[str] = []
    real_save, real_replace, real_manifest = torch.save, os.replace, training.write_manifest

    def step(name, real, *args, **kwargs):
        steps.append(name)
        if len(steps) == kill_at:
            if name == "torch.save":
                real(*args, **kwargs)
                with open(args[1], "r+b") as handle:
                    handle.truncate(max(1, os.path.getsize(args[1]) // 2))
            raise _Killed(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "save", lambda *a, **k: step("torch.save", real_save, *a, **k))
    monkeypatch.setattr(os, "replace", lambda *a, **k: step("os.replace", real_replace, *a, **k))
    monkeypatch.setattr(training, "write_manifest", lambda *a, **k: step("manifest", real_manifest, *a, **k))
    return steps


def test_a_kill_at_any_write_leaves_a_run_that_resume_continues_exactly(small_set, tmp_path, monkeypatch):
    data = small_set.subset(range(80))
    common = dict(epochs=2, batch_size=40, lr=1e-3, seed=5, quiet=True, arch_kwargs={"hidden": [16]})
    with monkeypatch.context() as patch:
        steps = _count_writes(patch)
        straight = train("ae", "mlp-ae-32", data, out_dir=tmp_path / "straight", **common)
    assert len(steps) >= 10, steps  # the epoch-0 state plus, per epoch, state, checkpoint, history, manifest
    expected = {k: v.cpu() for k, v in straight.model.state_dict().items()}
    for kill_at in range(1, len(steps) + 1):
        run = tmp_path / f"killed-{kill_at}"
        with monkeypatch.context() as patch:
            _count_writes(patch, kill_at)
            with pytest.raises(_Killed):
                train("ae", "mlp-ae-32", data, out_dir=run, **common)
        if not (run / "run_state.pt").is_file():  # killed before the first state existed: nothing to resume
            with pytest.raises(AerobustError, match="nothing to resume"):
                train("ae", "mlp-ae-32", data, out_dir=run, resume=True, **common)
            resumed = train("ae", "mlp-ae-32", data, out_dir=run, **common)
        else:
            resumed = train("ae", "mlp-ae-32", data, out_dir=run, resume=True, **common)
        for key, value in resumed.model.state_dict().items():
            assert torch.equal(value.cpu(), expected[key]), (kill_at, steps[kill_at - 1], key)
        assert [r["total"] for r in resumed.history] == [r["total"] for r in straight.history]
        # the exports agree with the run state again: checkpoint, history and manifest all say 2 epochs
        module, sidecar = load_checkpoint(run / "model.pt")
        assert sidecar["training"]["epochs_completed"] == 2
        assert torch.equal(module.state_dict()["code_head.weight"], expected["code_head.weight"])
        assert len((run / "history.jsonl").read_text().splitlines()) == 2
        assert json.loads((run / "manifest.json").read_text())["epochs_completed"] == 2


def test_resume_refuses_missing_damaged_or_foreign_runs_in_one_line(small_set, tmp_path):
    data = small_set.subset(range(80))
    common = dict(batch_size=40, lr=1e-3, quiet=True, arch_kwargs={"hidden": [16]})
    with pytest.raises(AerobustError, match="nothing to resume"):
        train("ae", "mlp-ae-32", data, epochs=1, out_dir=tmp_path / "missing", resume=True, **common)
    run = tmp_path / "run"
    train("ae", "mlp-ae-32", data, epochs=1, out_dir=run, **common)
    (run / "history.jsonl").write_text('{"epoch": 1, "total": \n')  # a corrupt export is rewritten, never read
    resumed = train("ae", "mlp-ae-32", data, epochs=2, out_dir=run, resume=True, **common)
    assert [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()] == [1, 2]
    assert len(resumed.history) == 2
    state = (run / "run_state.pt").read_bytes()
    (run / "run_state.pt").write_bytes(state[: len(state) // 3])
    with pytest.raises(AerobustError, match="run_state.pt is damaged") as damaged:
        train("ae", "mlp-ae-32", data, epochs=3, out_dir=run, resume=True, **common)
    assert "\n" not in str(damaged.value)
    user_run = tmp_path / "user-module"
    train("ae", MLPAutoencoder(hidden=(16,)), data, epochs=1, out_dir=user_run, **{**common, "arch_kwargs": None})
    with pytest.raises(AerobustError, match="does not fit this model"):  # same class name, other layers
        train("ae", MLPAutoencoder(hidden=(8,)), data, epochs=2, out_dir=user_run, resume=True,
              **{**common, "arch_kwargs": None})
    (run / "run_state.pt").unlink()  # a model folder without a run state (e.g. written by an older aerobust)
    with pytest.raises(AerobustError, match="no run_state.pt"):
        train("ae", "mlp-ae-32", data, epochs=3, out_dir=run, resume=True, **common)


def test_cli_train_and_bad_input(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--defense", "gmm-dae", "--data", "mnist-5k", "--pad", "32", "--limit",
                                  "200", "--epochs", "1", "--batch-size", "50", "--arch-option", "hidden=[32]",
                                  "--latent-noise", "0.05", "--option", "n_modes=5", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["arch_kwargs"]["hidden"] == [32] and sidecar["defense_config"]["prior"]["n_modes"] == 5
    assert sidecar["defense_config"]["options"]["latent_noise"] == 0.05

    for args, message in [(["--defense", "ae", "--coupling", "0.5"], "has no option coupling"),
                          (["--defense", "nope"], "unknown defenses 'nope'"),
                          (["--defense", "vae", "--arch", "mlp-ae-32"], "--arch mlp-vae-32 (or omit --arch)"),
                          (["--defense", "lipschitz-vae", "--arch", "mlp-vae-32"], "--arch mlp-vae-lipschitz-32 (or omit --arch)"),
                          (["--defense", "ae", "--arch", "mlp-vae-32"], "--arch mlp-ae-32 (or omit --arch)"),
                          (["--defense", "coupled-ks", "--option", "weighting=best"], "weighting")]:
        bad = runner.invoke(main, ["train", *args, "--pad", "32", "--limit", "100", "--epochs", "1", "--quiet",
                                   "--out", str(tmp_path / "bad")])
        assert bad.exit_code == 2, bad.output
        assert message in bad.output and "Traceback" not in bad.output
        assert len(bad.output.strip().splitlines()) == 1


@pytest.mark.parametrize("defense,architecture", [("lipschitz-vae", "mlp-vae-lipschitz-32"), ("vae", "mlp-vae-32")])
def test_cli_train_without_arch_uses_the_defense_architecture(tmp_path, defense, architecture):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--defense", defense, "--pad", "32", "--limit", "100", "--epochs", "1",
                                       "--batch-size", "50", "--arch-option", "hidden=[16, 16]", "--quiet",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "model.json").read_text())["architecture"] == architecture


def test_fidelity_samples_and_frechet_distance(small_set, mnist_test, tmp_path):
    result = train("gmm-dae", MLPAutoencoder(hidden=(64,)), small_set, epochs=2, lr=1e-3, quiet=True)
    model = wrap(result.model, device="cpu")
    prior = prior_from_defense_config(result.defense.describe())
    rows = per_mode_samples(model, prior, 6, torch.Generator().manual_seed(0))
    assert len(rows) == 10 and rows[0].shape == (6, 1, 32, 32)
    assert (save_figure(sample_grid_figure(rows, [f"mode {k}" for k in range(10)]), tmp_path, "grid")).is_file()

    features = SmallClassifierFeatures(small_set.images, small_set.labels, epochs=1)
    real_a, real_b = mnist_test.images[:300], mnist_test.images[300:600]
    generated = decode_codes(model, prior.sample(300, torch.Generator().manual_seed(1))[0])
    noise = torch.rand(300, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    real_vs_real = frechet_distance_small_classifier(real_a, real_b, features)
    real_vs_generated = frechet_distance_small_classifier(real_a, generated, features)
    real_vs_noise = frechet_distance_small_classifier(real_a, noise, features)
    assert 0 <= real_vs_real < real_vs_generated < real_vs_noise

    codes = fitted_gaussian_codes(model, small_set.images, 50, torch.Generator().manual_seed(0))
    assert codes.shape == (50, 10) and torch.isfinite(codes).all()
    with pytest.raises(AerobustError, match="inception_v3 state-dict"):
        frechet_distance_inception_v3(real_a, generated, tmp_path / "missing.pth")


RESUME_ARCHITECTURES = {"lipschitz-vae": "mlp-vae-lipschitz-32", "vae": "mlp-vae-32", "beta-vae": "mlp-vae-32",
                        "beta-tcvae": "mlp-vae-32", "smooth-encoder": "mlp-vae-32", "aave": "mlp-vae-32"}


@pytest.mark.parametrize("defense", sorted(DEFENSES.list()))
def test_every_defense_resumes_bit_identically_and_a_finished_rerun_rewrites_the_same_weights(defense, small_set,
                                                                                                tmp_path):
    """1 epoch + resume to 2 equals 2 epochs; rerunning the finished run exports the very same weights (the
    export reads the Lipschitz constants without a power-iteration step, so it changes nothing)."""
    arch = RESUME_ARCHITECTURES.get(defense, "mlp-ae-32")
    common = dict(epochs=2, batch_size=100, lr=1e-3, seed=1, quiet=True, arch_kwargs={"hidden": [32]})
    subset = small_set.subset(torch.arange(200))
    straight = train(defense, arch, subset, out_dir=tmp_path / "straight", **common)
    train(defense, arch, subset, out_dir=tmp_path / "split", **{**common, "epochs": 1})
    resumed = train(defense, arch, subset, out_dir=tmp_path / "split", resume=True, **common)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    exported = (tmp_path / "split" / "model.pt").read_bytes()
    train(defense, arch, subset, out_dir=tmp_path / "split", resume=True, **common)
    assert load_checkpoint(tmp_path / "split" / "model.pt")[1]["weights_sha256"] == \
        load_checkpoint(tmp_path / "straight" / "model.pt")[1]["weights_sha256"]
    assert (tmp_path / "split" / "model.pt").read_bytes() == exported


def test_resuming_a_finished_run_only_reads_it(small_set, tmp_path):
    # Several reproduction invocations resume the same finished runs at once: none may rewrite them.
    common = dict(epochs=1, batch_size=50, lr=1e-3, seed=0, device="cpu", quiet=True)
    data = small_set.subset(range(100))
    run = tmp_path / "run"
    train("ae", "mlp-ae-32", data, out_dir=run, **common)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.iterdir() if p.is_file()}
    train("ae", "mlp-ae-32", data, out_dir=run, resume=True, **common)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.iterdir() if p.is_file()}
    assert after == before
