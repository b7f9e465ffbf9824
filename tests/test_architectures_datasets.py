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


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_poisoned_data_is_refused_when_loaded_for_every_source(tmp_path, monkeypatch):
    """NaN/inf pixels and labels that are not one class index per image never reach a model."""
    from PIL import Image

    from aerobust.errors import InvalidDataError
    from aerobust.registry import DATASETS

    images = np.random.default_rng(1).random((10, 6, 6)).astype(np.float32)
    labels = np.arange(10) % 2

    def npz(name, x, y=None):
        np.savez(tmp_path / f"{name}.npz", **({"x": x} if y is None else {"x": x, "y": y}))
        return f"npz:{tmp_path / name}.npz"

    poisoned = images.copy()
    poisoned[[1, 4, 7], 0, 0] = [np.nan, np.inf, -np.inf]
    # the whole file is checked, not only the split asked for, and the count covers every bad value
    for split in ("train", "test"):
        with pytest.raises(InvalidDataError, match=r"nan\.npz: 3 of 360 pixel values are NaN or infinite"):
            load_dataset(npz("nan", poisoned, labels), split)
    cases = [(npz("few", images, labels[:7]), "7 labels .* for 10 images"),
             (npz("neg", images, labels - 1), "5 labels are negative"),
             (npz("str", images, np.array(list("abcdefghij"))), "integer class indices; got dtype <U1"),
             (npz("frac", images, labels + 0.5), "integer class indices; got dtype float64"),
             (npz("2d", images, labels.reshape(5, 2)), "one class index per image"),
             (npz("empty", images[:0]), "holds no images")]
    with open(tmp_path / "obj.npz", "wb") as handle:
        np.savez(handle, x=np.array([images[0], images[1][:3]], dtype=object))
    cases.append((f"npz:{tmp_path / 'obj.npz'}", "'x' cannot be read without pickle"))
    for spec, message in cases:
        with pytest.raises(AerobustError, match=message) as caught:
            load_dataset(spec, "all")
        assert "\n" not in str(caught.value)
    assert load_dataset(npz("whole-floats", images, labels.astype(float)), "all").labels.dtype == torch.long

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    Image.fromarray((images[0] * 255).astype(np.uint8)).save(tmp_path / "imgs" / "a" / "ok.png")
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ncut")
    with pytest.raises(DataUnavailableError, match=r"broken\.png is not a readable image"):
        load_dataset(f"folder:{tmp_path / 'imgs'}", "all")

    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "x-images-idx3-ubyte").write_bytes(_idx_bytes((images * 255).astype(np.uint8)))
    (tmp_path / "idx" / "x-labels-idx1-ubyte").write_bytes(_idx_bytes(labels[:9]))
    with pytest.raises(InvalidDataError, match="9 labels .* for 10 images"):
        load_dataset(f"idx:{tmp_path / 'idx'}", "all")

    # registered sources (torchvision ones, plugins) pass the same check in load_dataset
    monkeypatch.setitem(DATASETS._entries, "nan-source",
                        lambda split, root=None, download=False, arg=None: (poisoned, labels, np.arange(10)))
    with pytest.raises(InvalidDataError, match="nan-source: 3 of 360 pixel values"):
        load_dataset("nan-source", "all")


@pytest.mark.parametrize("side", [0, -3])
def test_resize_to_a_non_positive_side_is_refused(side):
    with pytest.raises(AerobustError, match=f"cannot resize images to {side} px"):
        fit_images(torch.zeros(1, 1, 8, 8), resize=side)
