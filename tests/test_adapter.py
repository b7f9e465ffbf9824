import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from aerobust import AerobustError, load_checkpoint, save_checkpoint, wrap
from aerobust.checkpoints import module_from_factory
from aerobust.errors import ShapeError


class EncodeDecode(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        self.dec = nn.Sequential(nn.Linear(3, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))
        self.input_shape = (1, 4, 4)

    def encode(self, x):
        return self.enc(x)

    def decode(self, z):
        return self.dec(z)


class GaussianEncoder(nn.Module):
    def __init__(self, as_distribution=False):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 6))
        self.as_distribution = as_distribution

    def forward(self, x):
        mu, logvar = self.net(x).chunk(2, dim=1)
        if self.as_distribution:
            return torch.distributions.Normal(mu, (0.5 * logvar).exp())
        return mu, logvar


def _decoder():
    return nn.Sequential(nn.Linear(3, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))


def test_module_with_encode_decode():
    torch.manual_seed(0)
    model = EncodeDecode()
    ae = wrap(model, device="cpu")
    x = torch.rand(5, 1, 4, 4)
    assert ae.latent_dim == 3 and not ae.is_stochastic
    assert torch.equal(ae.encode(x), model.encode(x))
    assert torch.equal(ae.reconstruct(x), model.decode(model.encode(x)))
    assert not ae.training
    with pytest.raises(AerobustError, match="deterministic"):
        ae.sample_latent(x)


def test_encoder_decoder_pair_needs_shape_and_checks_input():
    torch.manual_seed(0)
    pair = (nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), _decoder())
    with pytest.raises(AerobustError, match="input_shape"):
        wrap(pair)
    ae = wrap(pair, input_shape=(1, 4, 4), device="cpu")
    assert ae.reconstruct(torch.rand(2, 1, 4, 4)).shape == (2, 1, 4, 4)
    with pytest.raises(ShapeError, match=r"expected \(N, 1, 4, 4\)"):
        ae.encode(torch.rand(2, 1, 5, 5))
    # the wrapper owns the pair's parameters, so .to() and state_dict reach them
    assert len(list(ae.parameters())) == 4


@pytest.mark.parametrize("as_distribution", [False, True])
def test_vae_encoders_give_mean_code_and_samples(as_distribution):
    torch.manual_seed(0)
    encoder = GaussianEncoder(as_distribution)
    ae = wrap((encoder, _decoder()), input_shape=(1, 4, 4), device="cpu")
    x = torch.rand(4, 1, 4, 4)
    mu, logvar = encoder.net(x).chunk(2, dim=1)
    assert ae.is_stochastic
    assert torch.allclose(ae.encode(x), mu)
    post_mu, post_logvar = ae.posterior(x)
    assert torch.allclose(post_logvar, logvar, atol=1e-5)
    draws = torch.stack([ae.sample_latent(x) for _ in range(2000)])
    assert torch.allclose(draws.mean(0), mu, atol=0.15)
    assert torch.allclose(draws.std(0), (0.5 * logvar).exp(), rtol=0.1)


def test_decoder_with_wrong_output_shape_is_named():
    bad = (nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), nn.Sequential(nn.Linear(3, 9), nn.Unflatten(1, (1, 3, 3))))
    with pytest.raises(ShapeError, match=r"decoder returned shape \(2, 1, 3, 3\).*\(N, 1, 4, 4\)"):
        wrap(bad, input_shape=(1, 4, 4), device="cpu")


def test_non_tensor_outputs_are_rejected():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(AerobustError, match="decoder returned dict"):
        wrap((encoder, lambda z: {"x": z}), input_shape=(1, 4, 4), device="cpu")
    with pytest.raises(AerobustError, match="encoder returned str"):
        wrap((lambda x: "code", _decoder()), input_shape=(1, 4, 4), device="cpu")
    with pytest.raises(AerobustError, match="cannot wrap"):
        wrap(nn.Linear(2, 2))


def test_frozen_restores_mode_and_grad_flags():
    ae = wrap(EncodeDecode(), device="cpu")
    ae.train()
    with ae.frozen():
        assert not ae.training
        assert not any(p.requires_grad for p in ae.parameters())
        x = torch.rand(2, 1, 4, 4, requires_grad=True)
        ae.reconstruct(x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    assert ae.training and all(p.requires_grad for p in ae.parameters())


def test_device_auto_on_this_machine_is_available():
    from aerobust import resolve_device

    device = resolve_device("auto")
    assert device.type in ("cpu", "cuda", "mps")
    with pytest.raises(AerobustError, match="unknown device"):
        resolve_device("tpu7")


# -- the forms people publish (tests/model_factories.py), checkpoints of wrap() results ----------------
FACTORIES = Path(__file__).resolve().parent / "model_factories.py"
DIGIT_SHAPE = (1, 8, 8)


def _factory(name: str, **arguments):
    return module_from_factory(f"{FACTORIES}:{name}", arguments=arguments)


def test_module_with_encoder_and_decoder_submodules_is_a_vae():
    torch.manual_seed(0)
    model = _factory("vae", latent=3)
    assert not hasattr(model, "input_shape")
    with pytest.raises(AerobustError, match="input_shape"):
        wrap(model)
    ae = wrap(model, input_shape=DIGIT_SHAPE, device="cpu")
    x = torch.rand(5, *DIGIT_SHAPE)
    mu, logvar = model.encoder(x)
    assert ae.is_stochastic and ae.latent_dim == 3
    assert torch.equal(ae.encode(x), mu)
    assert torch.equal(ae.posterior(x)[1], logvar)
    assert torch.equal(ae.reconstruct(x), model.decoder(mu))
    # each tensor registered once
    assert len(ae.state_dict()) == len(model.state_dict())


@pytest.mark.parametrize("output", ["tensor", "distribution", "latent_dist"])
def test_spatial_codes_are_flat_for_distances_and_shaped_for_the_decoder(output):
    torch.manual_seed(0)
    model = _factory("spatial", output=output)
    ae = wrap(model, input_shape=DIGIT_SHAPE, device="cpu")
    x = torch.rand(3, *DIGIT_SHAPE)
    mean = model.down(x).chunk(2, dim=1)[0]
    assert ae.code_shape == (4, 2, 2) and ae.latent_dim == 16
    assert ae.is_stochastic == (output != "tensor")
    assert torch.equal(ae.encode(x), mean.reshape(3, 16))
    # decode restores the code map before calling the user's decoder (whose output has .sample)
    assert torch.equal(ae.reconstruct(x), model.up(mean))
    if output != "tensor":
        logvar = model.down(x).chunk(2, dim=1)[1]
        assert torch.allclose(ae.posterior(x)[1], logvar.reshape(3, 16), atol=1e-5)
        draws = torch.stack([ae.sample_latent(x) for _ in range(500)])
        assert draws.shape == (500, 3, 16)
        assert torch.allclose(draws.mean(0), mean.reshape(3, 16), atol=0.3)


def test_pair_of_bound_methods_registers_their_module_once():
    model = _factory("encode_decode")
    ae = wrap((model.encode, model.decode), input_shape=DIGIT_SHAPE, device="cpu")
    assert list(ae.wrapped) == ["model"]
    assert len(ae.state_dict()) == len(model.state_dict())


def _distinct_tensors(module):
    return len({t.data_ptr() for t in module.state_dict().values()})


@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(["encode_decode", "pair", "vae"]), latent=st.integers(1, 5),
       seeds=st.tuples(st.integers(0, 2**16), st.integers(0, 2**16)))
def test_checkpoint_of_any_wrap_round_trips_exactly(kind, latent, seeds):
    """Save a wrap() result, load it into a freshly initialized copy of its factory: same reconstructions."""
    spec = f"{FACTORIES}:{kind}"
    torch.manual_seed(seeds[0])
    ae = wrap(_factory(kind, latent=latent), input_shape=DIGIT_SHAPE, device="cpu")
    x = torch.rand(4, *DIGIT_SHAPE, generator=torch.Generator().manual_seed(seeds[1]))
    with tempfile.TemporaryDirectory() as folder:
        path = save_checkpoint(Path(folder) / "model.pt", ae, architecture=spec, arch_kwargs={"latent": latent})
        saved = torch.load(path, weights_only=True)
        # every wrapped tensor, each once
        assert len(saved) == _distinct_tensors(ae) == sum(1 for _ in ae.parameters()) + len(list(ae.buffers()))
        torch.manual_seed(seeds[0] + 1)  # a different initialization that the weights must overwrite
        module, _ = load_checkpoint(path, trust_factory=True)
    loaded = wrap(module, input_shape=DIGIT_SHAPE, device="cpu")
    assert not torch.equal(wrap(_factory(kind, latent=latent), input_shape=DIGIT_SHAPE, device="cpu")
                           .reconstruct(x), ae.reconstruct(x))
    assert torch.equal(loaded.reconstruct(x).cpu(), ae.reconstruct(x).cpu())
