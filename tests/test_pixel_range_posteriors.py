"""Issue 21: models in [-1, 1] (pixel_range) and every Gaussian posterior form (Normal, Independent, (mu, std))."""
import pytest
import torch
from torch import nn

from aerobust import AerobustError, wrap
from aerobust.metrics import ms_ssim
from aerobust.objectives import gaussian_posterior


class SignedIdentity(nn.Module):
    """Identity in [-1, 1] that refuses anything else: what a diffusers-style model expects."""

    def __init__(self, declare_range: bool):
        super().__init__()
        self.input_shape = (1, 32, 32)
        if declare_range:
            self.pixel_range = (-1.0, 1.0)
        self.seen_low = None

    def encode(self, x):
        if not (x.min() >= -1 and x.max() <= 1):
            raise ValueError("inputs must be in [-1, 1]")
        self.seen_low = float(x.min())
        return x.flatten(1)

    def decode(self, z):
        return z.reshape(z.shape[0], *self.input_shape)


def _images(seed=0, n=4):
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_declared_signed_range_reconstructs_exactly_in_unit_space():
    model = wrap(SignedIdentity(declare_range=True), device="cpu")
    x = _images()
    recon = model.reconstruct(x)
    assert model.pixel_range == (-1.0, 1.0)
    assert model._parts[0].__self__.seen_low < 0  # the model really saw [-1, 1] inputs
    torch.testing.assert_close(recon, x)
    assert torch.allclose(ms_ssim(recon, x), torch.ones(len(x)))


def test_wrap_argument_declares_the_range_of_a_model_without_attribute():
    model = wrap(SignedIdentity(declare_range=False), device="cpu", pixel_range=(-1, 1))
    torch.testing.assert_close(model.reconstruct(_images(1)), _images(1))


def test_undeclared_model_keeps_unit_range_and_says_so():
    model = wrap(SignedIdentity(declare_range=False), device="cpu")
    assert model.pixel_range == (0.0, 1.0)
    assert "pixel_range=(0.0, 1.0)" in repr(model)
    model.reconstruct(_images())
    assert model._parts[0].__self__.seen_low >= 0  # unmapped: the model saw [0, 1] images


@pytest.mark.parametrize("bad", ["1,-1", "0,0", "a,b", (0.0,), "nan,1"])
def test_bad_pixel_ranges_are_refused_in_one_line(bad):
    with pytest.raises(AerobustError) as err:
        wrap(SignedIdentity(declare_range=False), device="cpu", pixel_range=bad)
    assert "\n" not in str(err.value) and "range" in str(err.value)


class GaussianHead(nn.Module):
    def __init__(self, form: str):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(16, 6)
        self.dec = nn.Linear(3, 16)
        self.form = form
        self.input_shape = (1, 4, 4)

    def encode(self, x):
        mu, raw = self.net(x.flatten(1)).chunk(2, dim=1)
        std = nn.functional.softplus(raw) + 0.1
        if self.form == "normal":
            return torch.distributions.Normal(mu, std)
        if self.form == "independent":
            return torch.distributions.Independent(torch.distributions.Normal(mu, std), 1)
        if self.form == "std":
            return mu, std
        if self.form == "var":
            return mu, std ** 2
        if self.form == "negative-std":
            return mu, -std
        return mu, 2 * std.log()

    def decode(self, z):
        return self.dec(z).reshape(-1, 1, 4, 4)


def _reference_logvar(head, x):
    raw = head.net(x.flatten(1)).chunk(2, dim=1)[1]
    return 2 * (nn.functional.softplus(raw) + 0.1).log()


@pytest.mark.parametrize("form,reading", [("normal", "logvar"), ("independent", "logvar"),
                                          ("std", "std"), ("var", "var"), ("logvar", "logvar")])
def test_every_gaussian_form_gives_the_same_posterior(form, reading):
    head = GaussianHead(form)
    model = wrap(head, device="cpu", posterior=reading)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    mu, logvar = gaussian_posterior(model, x)  # what latent-kl / max-kl use
    assert model.is_stochastic
    torch.testing.assert_close(logvar, _reference_logvar(head, x))
    torch.testing.assert_close(mu, head.net(x.flatten(1)).chunk(2, dim=1)[0])


def test_std_tuple_misread_as_logvar_differs():
    """The reading matters: the same (mu, std) read as logvar gives another posterior."""
    head = GaussianHead("std")
    x = torch.rand(3, 1, 4, 4)
    _, as_logvar = wrap(head, device="cpu").posterior(x)
    assert not torch.allclose(as_logvar, _reference_logvar(head, x))


def test_negative_std_is_refused():
    with pytest.raises(AerobustError, match="negative"):
        wrap(GaussianHead("negative-std"), device="cpu", posterior="std")


def test_unknown_posterior_reading_is_refused():
    with pytest.raises(AerobustError, match="logvar, std, var"):
        wrap(GaussianHead("std"), device="cpu", posterior="sigma")


def test_independent_normal_is_sampled():
    model = wrap(GaussianHead("independent"), device="cpu")
    draw = model.sample_latent(torch.rand(2, 1, 4, 4))
    assert draw.shape == (2, 3)


def test_resolve_model_records_range_and_reading(tmp_path):
    from aerobust.checkpoints import resolve_model
    factory = tmp_path / "signed.py"
    factory.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Signed(nn.Module):\n"
        "    input_shape = (1, 8, 8)\n"
        "    pixel_range = (-1.0, 1.0)\n"
        "    def __init__(self):\n        super().__init__()\n        self.scale = nn.Parameter(torch.ones(()))\n"
        "    def encode(self, x):\n        return x.flatten(1) * self.scale\n"
        "    def decode(self, z):\n        return z.reshape(-1, 1, 8, 8)\n\n"
        "def build():\n    return Signed()\n")
    model, info = resolve_model(f"{factory}:build", device="cpu")
    assert info["pixel_range"] == [-1.0, 1.0] and info["posterior"] == "logvar"
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model.reconstruct(x), x)
    _, overridden = resolve_model(f"{factory}:build", device="cpu", pixel_range="0,1")
    assert overridden["pixel_range"] == [0.0, 1.0]


SIGNED_FACTORY = '''
import torch
from torch import nn

class Signed(nn.Module):
    """Identity in [-1, 1] that refuses images outside it."""
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
    def encode(self, x):
        if float(x.detach().min()) < -1 or float(x.detach().max()) > 1:
            raise ValueError("this model takes images in [-1, 1]")
        return x.flatten(1) * self.scale
    def decode(self, z):
        return z.reshape(-1, 1, 32, 32)

def build():
    return Signed()
'''


def test_cli_audit_with_declared_range_has_perfect_clean_fidelity(tmp_path):
    import json
    import subprocess
    import sys

    import pandas as pd

    factory = tmp_path / "signed.py"
    factory.write_text(SIGNED_FACTORY)
    out = tmp_path / "audit"
    done = subprocess.run([sys.executable, "-m", "aerobust", "audit", "--model", f"{factory}:build",
                           "--pixel-range", "-1,1", "--data", "mnist-5k", "--pad", "32", "--images", "2",
                           "--attacks", "latent", "--attack-option", "latent.steps=2", "--lambdas", "0.5",
                           "--trials", "1", "--quiet", "--no-report", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 2 and (rows["msssim_input_recon"] > 1 - 1e-5).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["build"]["pixel_range"] == [-1.0, 1.0]
    bad = subprocess.run([sys.executable, "-m", "aerobust", "audit", "--model", f"{factory}:build",
                          "--pixel-range", "1,-1", "--data", "mnist-5k", "--pad", "32", "--images", "2",
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "reversed" in bad.stderr
