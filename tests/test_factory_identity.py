"""A factory-built model's identity covers its code (issue 23, item 2): the same parameters under another
activation are another model, so a resumed audit or training run refuses a changed factory file."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from aerobust.checkpoints import factory_code_sha256, resolve_model
from aerobust.cli import main

FACTORY = """
import torch
from torch import nn
import aerobust


def build():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.{activation}())
    decoder = nn.Sequential(nn.Linear(3, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
    return aerobust.wrap((encoder, decoder), input_shape=(1, 8, 8))
"""


@pytest.fixture
def setup(tmp_path):
    factory = tmp_path / "factory.py"
    factory.write_text(FACTORY.format(activation="ReLU"))
    with open(tmp_path / "digits.npz", "wb") as handle:
        np.savez(handle, x=np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    return tmp_path, factory, f"npz:{tmp_path / 'digits.npz'}"


def _invoke(argv):
    return CliRunner().invoke(main, [str(a) for a in argv])


def _one_line_refusal(result, expected):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert expected in lines[0], lines[0]


def test_the_digest_follows_the_factory_file_not_its_parameters(setup):
    _, factory, _ = setup
    spec = f"{factory}:build"
    relu_info = resolve_model(spec, device="cpu")[1]
    factory.write_text(FACTORY.format(activation="Tanh"))
    tanh_info = resolve_model(spec, device="cpu")[1]
    assert relu_info["code_sha256"] != tanh_info["code_sha256"]
    assert tanh_info["code_sha256"] == factory_code_sha256(f"{factory}:other_name")  # the file, not the name
    assert resolve_model("mlp-ae-32", device="cpu")[1]["code_sha256"] is None


def test_a_resumed_audit_refuses_a_changed_factory(setup):
    tmp_path, factory, data = setup
    argv = ["audit", "--model", f"m={factory}:build", "--data", data, "--attacks", "max-damage",
            "--attack-option", "max-damage.steps=1", "--lambdas", "1", "--images", "2", "--trials", "1",
            "--split", "all", "--quiet", "--no-report", "--out", tmp_path / "audit"]
    assert _invoke(argv).exit_code == 0
    assert _invoke(argv).exit_code == 0  # the unchanged factory resumes
    factory.write_text(FACTORY.format(activation="Tanh"))  # same parameters, other model
    _one_line_refusal(_invoke(argv), "the code of a factory-built model changed")


def test_a_resumed_training_run_refuses_a_changed_factory(setup):
    tmp_path, factory, data = setup
    argv = ["train", "--defense", "ae", "--arch", f"{factory}:build", "--data", data, "--batch-size", "4",
            "--epochs", "1", "--quiet", "--out", tmp_path / "run"]
    assert _invoke(argv).exit_code == 0
    factory.write_text(FACTORY.format(activation="Tanh"))
    _one_line_refusal(_invoke(argv[:-5] + ["--epochs", "2", "--resume", "--quiet", "--out", tmp_path / "run"]),
                      "architecture_code_sha256")
