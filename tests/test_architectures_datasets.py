import numpy as np
import pytest
import torch

from aerobust import ARCHITECTURES, AerobustError, load_dataset, wrap
from aerobust.datasets import fit_images
from aerobust.errors import DataUnavailableError


# taef2 is pretrained and needs its weight files: tests/test_taef2.py covers it.
@pytest.mark.parametrize("name", [name for name in ARCHITECTURES.list() if name != "taef2"])
def test_every_builtin_architecture_round_trips(name):
    torch.manual_seed(0)
    model = ARCHITECTURES.create(name)
    ae = wrap(model, device="cpu")
    x = torch.rand(3, *model.input_shape)
    out = ae.reconstruct(x)
    assert out.shape == x.shape
    assert 0 <= out.min() and out.max() <= 1  # sigmoid output
    assert ae.encode(x).shape == (3, model.latent_dim)
    assert ae.is_stochastic == name.startswith(("mlp-vae", "conv-vae"))


def test_reference_mlp_layer_widths():
    model = ARCHITECTURES.create("mlp-ae-32")
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [200, 200, 200, 200, 10, 200, 200, 200, 200, 1024]


def _check_images(data, shape, n_classes):
    assert data.images.dtype == torch.float32 and data.images.shape[1:] == shape
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.images.max() == 1.0 or shape == (1, 8, 8)  # 8-bit sources reach full white
    assert data.labels.dtype == torch.long and len(data.labels) == len(data)
    assert sorted(data.labels.unique().tolist()) == list(range(n_classes))


def test_mnist_5k_real_images_and_disjoint_deterministic_splits():
    train = load_dataset("mnist-5k", "train")
    test = load_dataset("mnist-5k", "test")
    _check_images(train, (1, 28, 28), 10)
    assert len(train) == 4000 and len(test) == 1000
    assert not set(train.ids.tolist()) & set(test.ids.tolist())
    assert torch.equal(load_dataset("mnist-5k", "test").ids, test.ids)
    assert len(load_dataset("mnist-5k", "train", limit=100).labels.unique()) == 10
    # real digits: mean ink of MNIST is about 0.13 and the border pixels are blank
    assert 0.10 < train.images.mean() < 0.16
    assert train.images[:, :, 0, :].max() == 0


def test_digits_and_padding():
    digits = load_dataset("digits", "all")
    _check_images(digits, (1, 8, 8), 10)
    assert len(digits) == 1797
    padded = load_dataset("digits", "test", pad_to=12)
    assert padded.images.shape[1:] == (1, 12, 12)
    assert torch.equal(padded.images[:, :, 2:10, 2:10], load_dataset("digits", "test").images)
    resized = load_dataset("digits", "test", resize=32, channels=3)
    assert resized.images.shape[1:] == (3, 32, 32)


def test_idx_folder_reads_shared_mnist(mnist_test):
    import gzip

    from tests.conftest import SHARED_MNIST

    if not SHARED_MNIST.is_dir():
        pytest.skip(f"{SHARED_MNIST} not present")

    _check_images(mnist_test, (1, 32, 32), 10)
    raw_labels = np.frombuffer(gzip.open(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
    assert raw_labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first MNIST test labels
    assert mnist_test.labels.tolist() == raw_labels[mnist_test.ids.numpy()].tolist()
    # a lone t10k file set is split 80/20 like other single-file sources: train and test never overlap
    train = load_dataset(f"idx:{SHARED_MNIST}", "train")
    test = load_dataset(f"idx:{SHARED_MNIST}", "test")
    assert len(train) == 8000 and len(test) == 2000
    assert not set(train.ids.tolist()) & set(test.ids.tolist())


def test_npz_and_folder_user_data(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 2)
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}", "all")
    assert data.images.shape == (10, 3, 6, 6)
    assert torch.allclose(data.images[3].permute(1, 2, 0) * 255, torch.as_tensor(x[3]).float())
    for label in ("cat", "dog"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(x[i, :, :, 0]).save(tmp_path / "imgs" / label / f"{i}.png")
    folder = load_dataset(f"folder:{tmp_path / 'imgs'}", "all")
    assert folder.images.shape == (6, 1, 6, 6) and folder.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_dataset_errors_are_one_clear_line(tmp_path):
    with pytest.raises(DataUnavailableError, match="put MNIST/raw/.* or pass --download"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(AerobustError, match="unknown datasets 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(AerobustError, match="only 1000"):
        load_dataset("mnist-5k", "test", limit=5000)
    with pytest.raises(AerobustError, match="needs a path"):
        load_dataset("npz")
    with pytest.raises(AerobustError, match="cannot pad 28x28"):
        fit_images(torch.zeros(1, 1, 28, 28), pad_to=20)
