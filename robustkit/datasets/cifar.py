"""CIFAR-10 (Krizhevsky 2009) from the standard *binary* batches, no torchvision needed."""
from __future__ import annotations

import pathlib
from typing import Union

import numpy as np
import torch

from robustkit.datasets._common import ImageTensorDataset, check_split, require_dir

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_RECORD_BYTES = 1 + 3 * 32 * 32   # one label byte, then R, G, B planes of 32x32
_TRAIN_FILES = [f"data_batch_{index}.bin" for index in range(1, 6)]
_ARCHIVE_FOLDER = "cifar-10-batches-bin"   # what the official cifar-10-binary.tar.gz extracts to


def _batch_files(root: pathlib.Path, split: str) -> list[pathlib.Path]:
    if split == "train":
        missing = [name for name in _TRAIN_FILES if not (root / name).is_file()]
        if missing:
            raise FileNotFoundError(f"root: CIFAR-10 train batches {missing} are missing from {str(root)!r}")
        return [root / name for name in _TRAIN_FILES]
    # The full test set is test_batch.bin; partial copies (e.g. test_batch_first1000.bin) are accepted too.
    if (root / "test_batch.bin").is_file():
        return [root / "test_batch.bin"]
    files = sorted(root.glob("test_batch*.bin"))
    if not files:
        raise FileNotFoundError(f"root: no CIFAR-10 test batch (test_batch*.bin) in {str(root)!r}")
    return files


def _read_batch(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD_BYTES:
        raise ValueError(f"{path}: size {raw.size} bytes is not a positive multiple of the {_RECORD_BYTES}-byte "
                         f"CIFAR-10 record")
    records = raw.reshape(-1, _RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CLASSES):
        raise ValueError(f"{path}: label {int(labels.max())} outside [0, 10); not a CIFAR-10 binary batch")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _class_names(root: pathlib.Path) -> list[str]:
    meta = root / "batches.meta.txt"
    if meta.is_file():
        names = [line.strip() for line in meta.read_text().splitlines() if line.strip()]
        if len(names) == len(CLASSES):
            return names
    return list(CLASSES)


def cifar10(root: Union[str, pathlib.Path], split: str = "train") -> ImageTensorDataset:
    """CIFAR-10 as float32 ``[N, 3, 32, 32]`` images in [0, 1] and int64 labels.

    ``root`` holds the binary batches (``data_batch_1..5.bin``, ``test_batch.bin``), directly or in the
    ``cifar-10-batches-bin`` folder of the official archive. ``split="test"`` reads ``test_batch.bin``, or
    every ``test_batch*.bin`` present when it is absent (our shared copy has ``test_batch_first1000.bin``).

    Example::

        >>> test = robustkit.datasets.cifar10("../shared/data/cifar10", split="test")
        >>> x, y = test[:64]           # x: [64, 3, 32, 32] float32, y: [64] int64
    """
    check_split(split, ("train", "test"))
    folder = require_dir(root)
    if (folder / _ARCHIVE_FOLDER).is_dir():
        folder = folder / _ARCHIVE_FOLDER
    pixels, labels = zip(*(_read_batch(path) for path in _batch_files(folder, split)))
    return ImageTensorDataset(torch.from_numpy(np.concatenate(pixels)), torch.from_numpy(np.concatenate(labels)),
                              _class_names(folder))
