"""CIFAR-10 binary batches: decoding of synthetic records, file selection, and the real shared copy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robustkit.datasets import cifar10
from robustkit.datasets.cifar import CLASSES


def _write_batch(path, labels, seed):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], pixels.reshape(len(labels), -1)], 1)
    path.write_bytes(records.tobytes())
    return pixels


def test_records_decode_channel_major_with_labels(tmp_path):
    pixels = _write_batch(tmp_path / "test_batch.bin", [3, 9, 0], seed=0)
    data = cifar10(tmp_path, split="test")
    images, labels = data.tensors
    assert labels.tolist() == [3, 9, 0] and labels.dtype == torch.int64
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    # Record layout: 1024 red bytes, then green, then blue, each row-major.
    assert images[1, 2, 4, 7] == pixels[1, 2, 4, 7] / 255.0
    assert torch.equal(images, torch.from_numpy(pixels).float() / 255)
    assert data.classes == CLASSES


def test_full_test_batch_is_preferred_and_partial_batches_are_accepted(tmp_path):
    _write_batch(tmp_path / "test_batch_first1000.bin", [1, 2], seed=1)
    assert cifar10(tmp_path, "test").labels.tolist() == [1, 2]
    _write_batch(tmp_path / "test_batch.bin", [4, 5, 6], seed=2)
    assert cifar10(tmp_path, "test").labels.tolist() == [4, 5, 6]


def test_archive_subfolder_and_five_train_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for index in range(1, 6):
        _write_batch(folder / f"data_batch_{index}.bin", [index, index], seed=index)
    assert cifar10(tmp_path, "train").labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        cifar10(tmp_path / "absent", "test")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        cifar10(tmp_path, "test")
    _write_batch(tmp_path / "data_batch_1.bin", [0], seed=0)
    with pytest.raises(FileNotFoundError, match="data_batch_2.bin"):
        cifar10(tmp_path, "train")
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="multiple"):
        cifar10(tmp_path, "test")
    _write_batch(tmp_path / "test_batch.bin", [12], seed=0)
    with pytest.raises(ValueError, match="label 12"):
        cifar10(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        cifar10(tmp_path, "val")


def test_shared_cifar10_test_and_train(shared_data):
    root = shared_data / "cifar10"
    test = cifar10(root, "test")
    assert len(test) == 1_000
    assert test.classes == CLASSES
    x, y = test[:64]
    assert x.shape == (64, 3, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert int(test.labels.min()) == 0 and int(test.labels.max()) == 9
    train = cifar10(root, "train")
    assert len(train) == 50_000
    assert torch.bincount(train.labels, minlength=10).tolist() == [5_000] * 10
    mean = train.pixels.sum(dim=(0, 2, 3), dtype=torch.float64) / (50_000 * 32 * 32 * 255)
    torch.testing.assert_close(mean, torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64), atol=1e-4, rtol=0)
