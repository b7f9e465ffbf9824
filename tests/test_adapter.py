import pytest
import torch
from torch import nn

from aerobust import AerobustError, wrap
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
