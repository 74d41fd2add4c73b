"""MNIST (LeCun et al. 1998), shipped inside the package and verified by SHA-256 when loaded."""
from __future__ import annotations

import functools
import gzip
import pathlib
from typing import Optional, Union

import numpy as np
import torch

from robustkit.datasets._common import ImageTensorDataset, check_split, require_dir, verify_sha256

#: Where the four original idx ``.gz`` files ship inside the package.
EMBEDDED_ROOT = pathlib.Path(__file__).resolve().parent / "data" / "mnist"

#: SHA-256 of the published files (their MD5s equal the ones published with MNIST).
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
CLASSES = [str(digit) for digit in range(10)]


def _read_idx(path: pathlib.Path, magic: int, ndim: int) -> np.ndarray:
    """Decode an idx file: big-endian int32 magic, ``ndim`` big-endian int32 sizes, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    header = np.frombuffer(raw, dtype=">i4", count=1 + ndim)
    if int(header[0]) != magic:
        raise ValueError(f"{path}: idx magic number is {int(header[0])}, expected {magic}")
    shape = tuple(int(size) for size in header[1:])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + ndim))
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: idx header says shape {shape}, but the file holds {data.size} values")
    return data.reshape(shape)


@functools.lru_cache(maxsize=8)
def _load(split: str, root: pathlib.Path) -> ImageTensorDataset:
    images_name, labels_name = _FILES[split]
    for name in (images_name, labels_name):
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"root: MNIST file {str(path)!r} is missing")
        verify_sha256(path, MNIST_SHA256[name])
    images = _read_idx(root / images_name, _IMAGES_MAGIC, 3)       # [N, 28, 28]
    labels = _read_idx(root / labels_name, _LABELS_MAGIC, 1)       # [N]
    pixels = torch.from_numpy(images.copy()).unsqueeze(1)          # [N, 1, 28, 28] uint8
    return ImageTensorDataset(pixels, torch.from_numpy(labels.astype(np.int64)), CLASSES)


def mnist(split: str = "train", root: Optional[Union[str, pathlib.Path]] = None) -> ImageTensorDataset:
    """MNIST as float32 ``[N, 1, 28, 28]`` images in [0, 1] and int64 labels (60,000 train / 10,000 test).

    ``root=None`` reads the copy shipped inside robustkit; a ``root`` folder must hold the four original
    ``.gz`` files. On the first load in a process each file's SHA-256 is checked against
    :data:`MNIST_SHA256` (a mismatch raises :class:`robustkit.datasets.ChecksumError`). Decoded datasets are
    cached per process and shared between calls, so treat them as read-only.

    Example::

        >>> test = robustkit.datasets.mnist("test")
        >>> x, y = test[:256]          # x: [256, 1, 28, 28] float32, y: [256] int64
    """
    check_split(split, ("train", "test"))
    folder = EMBEDDED_ROOT if root is None else require_dir(root)
    return _load(split, folder.resolve())
