import json
import pickle

import pytest
import torch

from aerobust import AerobustError, load_checkpoint, resolve_model, save_checkpoint
from aerobust.architectures import MLPAutoencoder


def _saved(tmp_path, mnist_test):
    torch.manual_seed(1)
    model = MLPAutoencoder(hidden=(32,), latent_dim=4)
    path = save_checkpoint(tmp_path / "m.pt", model, architecture="mlp-ae-32",
                           arch_kwargs={"hidden": [32], "latent_dim": 4}, defense="ae",
                           training={"epochs": 0})
    return model, path


def test_round_trip_is_bit_identical(tmp_path, mnist_test):
    model, path = _saved(tmp_path, mnist_test)
    ae, info = resolve_model(checkpoint=path, device="cpu")
    x = mnist_test.images[:64]
    assert torch.equal(ae.reconstruct(x), model.eval()(x))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["architecture"] == "mlp-ae-32" and sidecar["defense"] == "ae"
    assert sidecar["versions"]["torch"] and info["source"] == "checkpoint"


def test_tampered_weights_are_refused(tmp_path, mnist_test):
    _, path = _saved(tmp_path, mnist_test)
    state = torch.load(path, weights_only=True)
    state["code_head.bias"] += 1
    torch.save(state, path)
    with pytest.raises(AerobustError, match="does not match the hash"):
        load_checkpoint(path)


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch EXPLOITED_MARKER",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_executes_nothing(tmp_path, mnist_test, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, path = _saved(tmp_path, mnist_test)
    path.write_bytes(pickle.dumps({"w": _Exploit()}))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar.pop("weights_sha256")  # an attacker controls the sidecar too
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(AerobustError, match="records no weights_sha256"):
        load_checkpoint(path)
    with pytest.raises(AerobustError, match="not a readable weights file"):
        load_checkpoint(path, trust_unhashed=True)
    assert not (tmp_path / "EXPLOITED_MARKER").exists()


def test_garbage_missing_and_mismatched_checkpoints(tmp_path, mnist_test):
    _, path = _saved(tmp_path, mnist_test)
    with pytest.raises(AerobustError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(AerobustError, match="not valid JSON"):
        load_checkpoint(path)
    path.with_suffix(".json").write_text(json.dumps({"architecture": "mlp-ae-32", "arch_kwargs": {}}))
    with pytest.raises(AerobustError, match="does not fit architecture mlp-ae-32"):
        load_checkpoint(path, trust_unhashed=True)
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "junk.json").write_text(json.dumps({"architecture": "mlp-ae-32"}))
    with pytest.raises(AerobustError, match="not a readable weights file"):
        load_checkpoint(tmp_path / "junk.pt", trust_unhashed=True)


def test_unhashed_sidecar_needs_explicit_trust(tmp_path, mnist_test):
    """Without a hash, other weights put under an AE's sidecar would be audited as that AE."""
    model, path = _saved(tmp_path, mnist_test)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    del sidecar["weights_sha256"]
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(AerobustError, match="records no weights_sha256.*--trust-unhashed"):
        resolve_model(checkpoint=path, device="cpu")
    ae, info = resolve_model(checkpoint=path, device="cpu", trust_unhashed=True)
    x = mnist_test.images[:8]
    assert torch.equal(ae.reconstruct(x).cpu(), model.eval()(x))
    assert info["weights_verified"] is False
    _, path = _saved(tmp_path, mnist_test)
    assert resolve_model(checkpoint=path, device="cpu")[1]["weights_verified"] is True


@pytest.mark.parametrize("arch_kwargs, message", [
    ([32, 4], "arch_kwargs must be a JSON object"),
    ({"hidden": [32], "latent_dim": 4, "no_such_argument": 1}, "does not take the arguments"),
    ({"hidden": [32], "latent_dim": -4}, "rejects arch_kwargs"),
])
def test_sidecar_arch_kwargs_the_architecture_rejects(tmp_path, mnist_test, arch_kwargs, message):
    _, path = _saved(tmp_path, mnist_test)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["arch_kwargs"] = arch_kwargs
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(AerobustError, match=message) as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_model_by_registry_name_and_user_factory(tmp_path, monkeypatch):
    (tmp_path / "user_models_for_test.py").write_text(
        "from aerobust.architectures import MLPAutoencoder\n"
        "def build():\n    return MLPAutoencoder(hidden=(16,), latent_dim=3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ae, info = resolve_model("user_models_for_test:build", device="cpu")
    assert ae.latent_dim == 3 and info["source"] == "factory"
    ae, _ = resolve_model("mlp-vae-32", device="cpu", arch_kwargs={"latent_dim": 5})
    assert ae.is_stochastic and ae.latent_dim == 5
    with pytest.raises(AerobustError, match="no attribute 'missing'"):
        resolve_model("user_models_for_test:missing")
    with pytest.raises(AerobustError, match="exactly one"):
        resolve_model()
