"""TAEF2 (pretrained latent autoencoder) and the photographs bundled with scikit-image."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aerobust import AerobustError, ARCHITECTURES, wrap
from aerobust.cli import main
from aerobust.datasets import load_dataset
from aerobust.metrics import ms_ssim, resolve_msssim_settings
from aerobust.taef2 import TAEF2, WEIGHTS_ENV

TAEF2_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "taef2"
needs_weights = pytest.mark.skipif(not (TAEF2_DIR / "taef2_encoder.pth").is_file(),
                                   reason="../shared/data/taef2 is not in this checkout")


def test_architecture_matches_every_tensor_of_the_facts_sheet():
    keys = TAEF2_DIR / "keys.txt"
    if not keys.is_file():
        pytest.skip("../shared/data/taef2/keys.txt is not in this checkout")
    expected: dict[str, dict[str, tuple]] = {}
    part = None
    for line in keys.read_text().splitlines():
        if line.startswith("#"):
            part = "encoder" if "encoder" in line else "decoder"
            expected[part] = {}
        elif line.strip():
            name, shape = line.split()
            expected[part][name] = tuple(int(s) for s in shape.split("x"))
    model = TAEF2()
    for part in ("encoder", "decoder"):
        actual = {k: tuple(v.shape) for k, v in getattr(model, part).state_dict().items()}
        assert actual == expected[part]


def test_missing_weights_say_where_the_files_come_from(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(AerobustError, match="no folder was given.*madebyollin/taesd.*AEROBUST_TAEF2_DIR"):
        ARCHITECTURES.create("taef2")
    (tmp_path / "taef2_encoder.pth").write_bytes(b"")
    result = CliRunner().invoke(main, ["audit", "--model", "taef2", "--model-arg", f"weights_dir={tmp_path}",
                                       "--data", "skimage", "--resize", "64", "--images", "2", "--quiet", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: TAEF2 weights not found ({tmp_path} lacks taef2_decoder.pth): get taef2_encoder.pth and "
        "taef2_decoder.pth from github.com/madebyollin/taesd (MIT, keep its LICENSE beside them) and pass "
        "--model-arg weights_dir=DIR or set AEROBUST_TAEF2_DIR=DIR"]


def test_bundled_photographs_and_faces():
    photos = load_dataset("skimage", "test")
    assert photos.images.shape == (8, 3, 256, 256) and photos.labels is None
    assert load_dataset("skimage", "train").images.equal(photos.images)  # an evaluation set: all 8 in every split
    small = load_dataset("skimage", "test", resize=64)
    assert small.images.shape == (8, 3, 64, 64)
    # the astronaut photograph is 512 x 512: its centre crop is the whole picture, so a plain
    # average pooling to 256 px must be close to it
    from PIL import Image
    import importlib.util

    folder = Path(list(importlib.util.find_spec("skimage").submodule_search_locations)[0]) / "data"
    astronaut = torch.from_numpy(np.asarray(Image.open(folder / "astronaut.png").convert("RGB")).copy())
    pooled = torch.nn.functional.avg_pool2d(astronaut.permute(2, 0, 1)[None].float() / 255, 2)[0]
    assert (pooled - photos.images[0]).abs().mean() < 0.02
    faces = load_dataset("lfw-subset", "all")
    assert faces.images.shape == (200, 1, 25, 25) and faces.labels.sum() == 100
    assert set(load_dataset("lfw-subset", "test").ids.tolist()).isdisjoint(load_dataset("lfw-subset", "train").ids.tolist())


@needs_weights
def test_audit_of_taef2_on_photographs_reconstructs_them_well(tmp_path):
    out = tmp_path / "audit"
    result = CliRunner().invoke(main, [
        "audit", "--model", "taef2", "--model-arg", f"weights_dir={TAEF2_DIR}", "--data", "skimage",
        "--resize", "64", "--images", "2", "--trials", "1", "--attacks", "latent,max-damage", "--lambdas", "0.5",
        "--attack-option", "*.steps=2", "--attack-option", "*.restarts=1", "--quiet", "--no-report",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    settings = resolve_msssim_settings(manifest["metrics"])
    with np.load(out / "examples.npz") as examples:
        grid = torch.from_numpy(examples["taef2::max-damage::0.5"])  # image, reconstruction, adversarial, ...
    clean = ms_ssim(grid[:, 0], grid[:, 1], settings)
    assert clean.shape == (2,) and bool((clean >= 0.9).all()), clean
    # the code map is 32 x 8 x 8, compared flat
    ae = wrap(ARCHITECTURES.create("taef2", weights_dir=str(TAEF2_DIR)), input_shape=(3, 64, 64), device="cpu")
    assert ae.code_shape == (32, 8, 8) and ae.latent_dim == 32 * 64
