"""The embedded MNIST: checksums, decoding, shapes, ranges and labels."""
from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from robustkit.datasets import MNIST_SHA256, ChecksumError, mnist
from robustkit.datasets.mnist import EMBEDDED_ROOT, _read_idx

# Published per-digit counts of the MNIST test set.
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_test_split_shapes_ranges_and_label_counts():
    test = mnist("test")
    images, labels = test.tensors
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (10_000,) and labels.dtype == torch.int64
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert torch.bincount(labels, minlength=10).tolist() == TEST_COUNTS
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    x, y = test[3]
    assert x.shape == (1, 28, 28) and int(y) == 0


def test_train_split_statistics_match_the_published_ones():
    train = mnist("train")
    assert len(train) == 60_000
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert torch.bincount(train.labels, minlength=10).min() > 5_000
    assert abs(float(train.images.mean()) - 0.1307) < 1e-4
    assert abs(float(train.images.std()) - 0.3081) < 1e-4


def test_decoded_dataset_is_cached_per_process():
    assert mnist("test") is mnist("test")


def test_batch_indexing_equals_per_item_indexing():
    test = mnist("test")
    index = torch.tensor([5, 0, 9_999])
    x, y = test[index]
    for row, i in enumerate(index.tolist()):
        xi, yi = test[i]
        assert torch.equal(x[row], xi) and int(y[row]) == int(yi)


def test_checksum_constants_equal_the_shared_sha256sums(shared_data):
    listed = dict(line.split()[::-1] for line in (shared_data / "mnist" / "SHA256SUMS").read_text().splitlines())
    assert listed == MNIST_SHA256


def test_a_corrupted_copy_raises_checksum_error_naming_the_file(tmp_path):
    intact, corrupted = tmp_path / "intact", tmp_path / "corrupted"
    for folder in (intact, corrupted):
        folder.mkdir()
        for name in MNIST_SHA256:
            shutil.copy(EMBEDDED_ROOT / name, folder / name)
    assert len(mnist("test", root=intact)) == 10_000   # an intact copy loads from a root folder
    labels = corrupted / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 0xFF
    labels.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz"):
        mnist("test", root=corrupted)


def test_missing_file_folder_and_bad_split_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        mnist("test", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="root"):
        mnist("test", root=tmp_path / "absent")
    with pytest.raises(ValueError, match="split"):
        mnist("validation")


def test_idx_decoder_checks_magic_and_size(tmp_path):
    def write(name, header, payload):
        path = tmp_path / name
        with gzip.open(path, "wb") as handle:
            handle.write(np.array(header, dtype=">i4").tobytes() + bytes(payload))
        return path

    good = write("good.gz", [2049, 3], [1, 2, 3])
    assert _read_idx(good, 2049, 1).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="magic"):
        _read_idx(write("magic.gz", [2051, 3], [1, 2, 3]), 2049, 1)
    with pytest.raises(ValueError, match="shape"):
        _read_idx(write("short.gz", [2049, 4], [1, 2, 3]), 2049, 1)
