"""Bring-your-own models on the command line: FILE.py:factory, package.module:factory, --model-arg."""
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from aerobust import AerobustError, load_checkpoint, wrap
from aerobust.cli import main

THIRD_PARTY_VAE = '''
import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, latent):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        self.mu = nn.Linear(8 * 8 * 8, latent)
        self.logvar = nn.Linear(8 * 8 * 8, latent)

    def forward(self, x):
        h = self.conv(x)
        return self.mu(h), self.logvar(h)


class VAE(nn.Module):
    def __init__(self, latent):
        super().__init__()
        self.encoder = Encoder(latent)
        self.decoder = nn.Sequential(nn.Linear(latent, 8 * 8 * 8), nn.ReLU(), nn.Unflatten(1, (8, 8, 8)),
                                     nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Sigmoid())


def build(latent=8, weights=None):
    model = VAE(latent)
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
    return model
'''

QUICK_AUDIT = ["--data", "digits", "--resize", "16", "--images", "3", "--trials", "1", "--lambdas", "0.5", "--attacks",
               "latent,max-damage", "--attack-option", "*.steps=3", "--attack-option", "*.restarts=1",
               "--seed", "1", "--quiet", "--no-report"]


def _write_vae(folder: Path, latent: int) -> tuple[Path, Path]:
    source = folder / "third_party_vae.py"
    source.write_text(THIRD_PARTY_VAE)
    namespace: dict = {}
    exec(compile(THIRD_PARTY_VAE, str(source), "exec"), namespace)
    torch.manual_seed(0)
    weights = folder / "vae-weights.pt"
    torch.save(namespace["build"](latent).state_dict(), weights)
    return source, weights


def test_audit_of_a_third_party_conv_vae_from_a_file_with_arguments(tmp_path, monkeypatch):
    source, weights = _write_vae(tmp_path, latent=5)
    monkeypatch.setattr("aerobust.audit.AuditConfig.classifier_epochs", 1)
    out = tmp_path / "audit"
    result = CliRunner().invoke(main, ["audit", "--model", f"{source}:build", "--model-arg", "latent=5",
                                       "--model-arg", f"weights={weights}", *QUICK_AUDIT, "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    assert set(results["model"]) == {"build"}  # the label defaults to the factory's name
    assert len(results) == 2 * 3 and results["attack_loss"].notna().all()
    manifest = json.loads((out / "manifest.json").read_text())
    info = manifest["models"]["build"]
    assert info["source"] == "factory" and info["arch_kwargs"] == {"latent": 5, "weights": str(weights)}


def test_package_module_factory_from_the_current_folder(tmp_path, monkeypatch):
    _write_vae(tmp_path, latent=3)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.setattr("aerobust.audit.AuditConfig.classifier_epochs", 1)
    result = CliRunner().invoke(main, ["audit", "--model", "VAE3=third_party_vae:build", "--model-arg",
                                       "latent=3", *QUICK_AUDIT, "--attacks", "max-damage", "--out", "a"])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "a" / "results.csv")["model"]) == {"VAE3"}


BAD_FACTORIES = [
    (["--model", "{dir}/missing.py:build"], "missing.py does not exist"),
    (["--model", "{dir}/third_party_vae.py:nothing"], "has no attribute 'nothing'"),
    (["--model", "{dir}/third_party_vae.py:build", "--model-arg", "latent=x"], "raised TypeError"),
    (["--model", "{dir}/third_party_vae.py:build", "--model-arg", "color=3"], "raised TypeError"),
    (["--model", "{dir}/third_party_vae.py:build", "--model-arg", "novalue"], "--model-arg takes KEY=VALUE"),
    (["--model", "{dir}/third_party_vae.py:build", "--model-arg", "weights={dir}/nope.pt"], "raised FileNotFoundError"),
    (["--model", "json:dumps"], "json:dumps raised TypeError"),
    (["--model", "json:JSONDecodeError", "--model-arg", "a=1"], "raised TypeError"),
    (["--model", "json:__doc__"], "not a factory"),
    (["--model", "no_such_module_anywhere:build"], "cannot import 'no_such_module_anywhere'"),
    (["--model", "{dir}/third_party_vae.py:"], "expected FILE.py:factory"),
    (["--model", "{dir}/syntax_error.py:build"], "failed to import (SyntaxError"),
    (["--model", "{dir}/returns_dict.py:build"], "returned dict; it must return a torch nn.Module"),
    (["--checkpoint", "{dir}/vae-weights.pt", "--model-arg", "a=1"], "--model-arg applies to --model"),
]


@pytest.mark.parametrize("args, message", BAD_FACTORIES)
def test_every_factory_failure_is_one_line_with_exit_code_2(tmp_path, args, message):
    _write_vae(tmp_path, latent=3)
    (tmp_path / "syntax_error.py").write_text("def build(:\n")
    (tmp_path / "returns_dict.py").write_text("def build():\n    return {}\n")
    argv = ["audit", *[a.format(dir=tmp_path) for a in args], *QUICK_AUDIT, "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert message in lines[0]


def test_train_a_file_factory_then_load_its_checkpoint_from_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setattr("aerobust.audit.AuditConfig.classifier_epochs", 1)
    source, _ = _write_vae(tmp_path, latent=3)
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    trained = CliRunner().invoke(main, ["train", "--defense", "vae", "--arch", "third_party_vae.py:build",
                                        "--model-arg", "latent=3", "--data", "digits", "--resize", "16",
                                        "--limit", "100", "--epochs", "1", "--batch-size", "50", "--quiet",
                                        "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    sidecar = json.loads((run / "model.json").read_text())
    # the file is recorded by its absolute path, so the checkpoint loads from any folder
    assert sidecar["architecture"] == f"{source.resolve()}:build" and sidecar["arch_kwargs"] == {"latent": 3}
    monkeypatch.chdir(Path(__file__).parent)
    module, _ = load_checkpoint(run / "model.pt", trust_factory=True)
    ae = wrap(module, input_shape=(1, 16, 16), device="cpu")
    assert ae.is_stochastic and ae.latent_dim == 3
    # auditing it runs the factory only when the user says so
    argv = ["audit", "--checkpoint", str(run / "model.pt"), *QUICK_AUDIT, "--attacks", "max-damage"]
    refused = CliRunner().invoke(main, [*argv, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "runs that code: pass --trust-factory" in refused.output
    trusted = CliRunner().invoke(main, [*argv, "--trust-factory", "--out", str(tmp_path / "trusted")])
    assert trusted.exit_code == 0, trusted.output


def test_a_sidecar_cannot_make_a_checkpoint_run_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({}, path)
    path.with_suffix(".json").write_text(json.dumps({"architecture": "os:system",
                                                     "arch_kwargs": {"command": "touch pwned"}}))
    with pytest.raises(AerobustError, match="calls|runs that code"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
