"""The in-memory dataset type shared by the MNIST and CIFAR-10 loaders, and file checks."""
from __future__ import annotations

import functools
import hashlib
import pathlib
from typing import Sequence, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

Index = Union[int, slice, Sequence[int], Tensor]


class ChecksumError(RuntimeError):
    """A data file's SHA-256 differs from the published one (a corrupted or different file)."""


class ImageTensorDataset(Dataset):
    """Images held as uint8 ``[N, C, H, W]`` and served as float32 in [0, 1], with int64 labels ``[N]``.

    Keeping uint8 in memory costs a quarter of float32 (CIFAR-10 train: 154 MB instead of 614 MB).
    ``dataset[i]`` gives ``(image [C, H, W], label)``; ``dataset[index_tensor]`` or ``dataset[a:b]`` gives a
    whole batch at once, which is how :func:`robustkit.training.train_classifier` reads it. ``images``
    and ``tensors`` expose the full float32 tensors like a ``TensorDataset`` (converted once, on first use).
    Loaders cache and share these objects: treat them as read-only.
    """

    def __init__(self, pixels: Tensor, labels: Tensor, classes: Sequence[str]):
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise ValueError(f"pixels must be uint8 [N, C, H, W], got {pixels.dtype} {list(pixels.shape)}")
        if labels.dtype != torch.int64 or labels.shape != pixels.shape[:1]:
            raise ValueError(f"labels must be int64 [{pixels.shape[0]}], got {labels.dtype} {list(labels.shape)}")
        self.pixels = pixels
        self.labels = labels
        self.classes = list(classes)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __getitem__(self, index: Index) -> tuple[Tensor, Tensor]:
        if isinstance(index, (list, tuple)):
            index = torch.as_tensor(index, dtype=torch.int64)
        return self.pixels[index].to(torch.float32).div_(255.0), self.labels[index]

    @functools.cached_property
    def images(self) -> Tensor:
        """All images as float32 ``[N, C, H, W]`` in [0, 1]."""
        return self.pixels.to(torch.float32).div_(255.0)

    @property
    def tensors(self) -> tuple[Tensor, Tensor]:
        """``(images, labels)``, as ``torch.utils.data.TensorDataset.tensors``."""
        return self.images, self.labels

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, image_shape={list(self.pixels.shape[1:])}, "
                f"classes={len(self.classes)})")


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: pathlib.Path, expected: str) -> None:
    """Raise :class:`ChecksumError` naming the file when its SHA-256 is not ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(f"{path}: SHA-256 is {actual}, expected {expected}. The file is corrupted or not "
                            f"the published one; restore it (reinstall robustkit for the embedded MNIST).")


def require_dir(root: Union[str, pathlib.Path], argument: str = "root") -> pathlib.Path:
    path = pathlib.Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{argument}: directory {str(path)!r} does not exist")
    return path


def check_split(split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {list(allowed)}, got {split!r}")
