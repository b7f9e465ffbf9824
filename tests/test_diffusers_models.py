"""Issue 21: diffusers' image autoencoders from tiny random configs, saved and loaded offline."""
import json
import os
import subprocess
import sys

import pytest
import torch

from aerobust import AerobustError, wrap
from aerobust.checkpoints import resolve_model

try:
    import diffusers
except ImportError:
    if os.environ.get("CI"):  # CI installs the extra (Makefile: .[test,diffusers]): a missing one is a failure
        raise
    pytest.skip("the diffusers extra is not installed here (pip install 'aerobust[diffusers]')", allow_module_level=True)

DOWN, UP = ("DownEncoderBlock2D",) * 2, ("UpDecoderBlock2D",) * 2
TINY_CONFIGS = {
    "AutoencoderKL": dict(down_block_types=DOWN, up_block_types=UP, block_out_channels=(8, 16), layers_per_block=1,
                          latent_channels=4, norm_num_groups=4, sample_size=32),
    "AutoencoderKLFlux2": dict(down_block_types=DOWN, up_block_types=UP, block_out_channels=(8, 16),
                               layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=32),
    "AsymmetricAutoencoderKL": dict(down_block_types=DOWN, up_block_types=UP, down_block_out_channels=(8, 16),
                                    up_block_out_channels=(8, 16), layers_per_down_block=1, layers_per_up_block=1,
                                    latent_channels=4, norm_num_groups=4, sample_size=32),
    "AutoencoderTiny": dict(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                            num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4),
    "AutoencoderDC": dict(latent_channels=4, attention_head_dim=4, encoder_block_types="ResBlock",
                          decoder_block_types="ResBlock", encoder_block_out_channels=(8, 16),
                          decoder_block_out_channels=(8, 16), encoder_layers_per_block=(1, 1),
                          decoder_layers_per_block=(1, 1), encoder_qkv_multiscales=((), ()),
                          decoder_qkv_multiscales=((), ())),
    "VQModel": dict(down_block_types=DOWN, up_block_types=UP, block_out_channels=(8, 16), layers_per_block=1,
                    latent_channels=4, norm_num_groups=4, num_vq_embeddings=16, vq_embed_dim=4, sample_size=32),
}
PRESENT = [name for name in TINY_CONFIGS if hasattr(diffusers, name)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each class built from its tiny config with a fixed seed and written with save_pretrained."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    folders = {}
    for name in PRESENT:
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(name)
        getattr(diffusers, name)(**TINY_CONFIGS[name]).save_pretrained(folder)
        folders[name] = folder
    return folders


@pytest.mark.parametrize("name", PRESENT)
def test_loaded_class_maps_ranges_and_scales_latents(saved, name):
    model, info = resolve_model(f"diffusers:{name}", device="cpu", arch_kwargs={"pretrained": str(saved[name])},
                                data_shape=(3, 32, 32))
    raw = getattr(diffusers, name).from_pretrained(saved[name]).eval()
    assert info["source"] == "diffusers" and info["pixel_range"] == [-1.0, 1.0]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = raw.encode(2 * x - 1)
        latent = out.latent_dist.mean if hasattr(out, "latent_dist") else getattr(out, "latents", None)
        latent = out.latent if latent is None else latent
        config = raw.config
        expected = (latent - (config.get("shift_factor") or 0.0)) * (config.get("scaling_factor") or 1.0)
        torch.testing.assert_close(model.encode(x), expected.flatten(1))
        expected_recon = (raw.decode(latent).sample + 1) / 2
        torch.testing.assert_close(model.reconstruct(x), expected_recon, atol=1e-5, rtol=1e-4)
    # The same object built by a user and passed to wrap() gets the same treatment.
    direct = wrap(raw, input_shape=(3, 32, 32), device="cpu")
    assert direct.pixel_range == (-1.0, 1.0)
    torch.testing.assert_close(direct.encode(x), model.encode(x))


def test_kl_posterior_is_gaussian_and_scaled(saved):
    model, _ = resolve_model("diffusers:AutoencoderKL", device="cpu", arch_kwargs={"pretrained": str(saved["AutoencoderKL"])},
                             data_shape=(3, 32, 32))
    raw = diffusers.AutoencoderKL.from_pretrained(saved["AutoencoderKL"]).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        _, logvar = model.posterior(x)
        dist = raw.encode(2 * x - 1).latent_dist
    scale = raw.config.scaling_factor
    torch.testing.assert_close(logvar, (dist.logvar + 2 * torch.log(torch.tensor(scale))).flatten(1), atol=1e-4, rtol=1e-4)


def test_vq_gradient_reaches_the_continuous_code(saved):
    model, info = resolve_model("diffusers:VQModel", device="cpu", arch_kwargs={"pretrained": str(saved["VQModel"])},
                                data_shape=(3, 32, 32))
    assert info["diffusers_model"]["quantization"].startswith("straight-through")
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    model.reconstruct(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_wrong_size_refused_with_the_multiple(saved):
    with pytest.raises(AerobustError, match="multiples of 2"):
        resolve_model("diffusers:AutoencoderKL", device="cpu", arch_kwargs={"pretrained": str(saved["AutoencoderKL"])},
                      data_shape=(3, 33, 33))


@pytest.mark.parametrize("spec,message", [("diffusers:AutoencoderKLTemporalDecoder", "not supported yet"),
                                          ("diffusers:AutoencoderOobleck", "not supported yet"),
                                          ("diffusers:Nope", "unknown diffusers autoencoder"),
                                          ("diffusers:AutoencoderKL", "pretrained=DIR_OR_ID")])
def test_bad_specs_are_one_line(spec, message):
    with pytest.raises(AerobustError, match=message) as err:
        resolve_model(spec, device="cpu", data_shape=(3, 32, 32))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["AutoencoderKL", "VQModel"])
def test_cli_audit_of_a_saved_class(saved, tmp_path, name):
    out = tmp_path / "audit"
    done = subprocess.run([sys.executable, "-m", "aerobust", "audit", "--model", f"diffusers:{name}",
                           "--model-arg", f"pretrained={saved[name]}", "--data", "skimage", "--resize", "32",
                           "--images", "2", "--attacks", "latent", "--attack-option", "latent.steps=2",
                           "--lambdas", "0.5", "--trials", "1", "--quiet", "--no-report", "--out", str(out)], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "[-1.0, 1.0]" in json.dumps(manifest)
