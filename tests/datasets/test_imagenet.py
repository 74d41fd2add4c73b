"""ImageNet folders: class indices from a class list, the resize/centre-crop geometry, and the real sample."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from robustkit.datasets import imagenet_folder, read_classes_file


def _save(path, size, colour, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_default_classes_are_sorted_subfolders_and_values_are_exact_for_flat_images(tmp_path):
    _save(tmp_path / "n02" / "a.png", (300, 200), (255, 0, 51))
    _save(tmp_path / "n01" / "b.PNG", (256, 400), (0, 128, 255))
    (tmp_path / "n01" / "notes.txt").write_text("not an image")
    data = imagenet_folder(tmp_path)
    assert data.classes == ["n01", "n02"] and len(data) == 2
    x, y = data[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and int(y) == 0
    torch.testing.assert_close(x, torch.tensor([0, 128, 255]).view(3, 1, 1).expand(3, 224, 224) / 255.0)
    x, y = data[1]
    assert int(y) == 1
    torch.testing.assert_close(x[:, 100, 100], torch.tensor([1.0, 0.0, 0.2]))


def test_center_crop_geometry_matches_resize_shorter_side_then_crop(tmp_path):
    # 512x256 (wide): the shorter side is already 256, so the crop keeps columns 144..367 of the original.
    image = Image.new("RGB", (512, 256), (0, 0, 0))
    for column in range(512):
        for row in range(0, 256, 64):
            image.putpixel((column, row), (column // 2, 0, 0))
    (tmp_path / "n0").mkdir()
    image.save(tmp_path / "n0" / "img.png")
    x, _ = imagenet_folder(tmp_path)[0]
    top = (256 - 224) // 2
    expected = torch.tensor([column // 2 for column in range(144, 368)], dtype=torch.float32) / 255
    torch.testing.assert_close(x[0, 64 - top], expected)


def test_greyscale_images_become_rgb_and_sizes_are_configurable(tmp_path):
    _save(tmp_path / "n0" / "g.png", (64, 80), 77, mode="L")
    x, _ = imagenet_folder(tmp_path, resize_size=40, crop_size=32)[0]
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x, torch.full((3, 32, 32), 77 / 255))


def test_classes_file_gives_sorted_wnid_indices_and_rejects_inconsistent_files(tmp_path):
    listing = tmp_path / "classes.txt"
    listing.write_text("0\tn001\ttench\n1\tn002\tgoldfish\n2\tn003\tshark\n")
    _save(tmp_path / "val" / "n003" / "x.png", (10, 10), (0, 0, 0))
    data = imagenet_folder(tmp_path / "val", classes_file=listing, resize_size=8, crop_size=8)
    assert int(data[0][1]) == 2 and data.class_names["n001"] == "tench" and len(data.classes) == 3
    listing.write_text("0\tn002\tgoldfish\n1\tn001\ttench\n")
    with pytest.raises(ValueError, match="sorted"):
        read_classes_file(listing)
    listing.write_text("n002\nn001\n")
    assert read_classes_file(listing)[0] == ["n001", "n002"]
    with pytest.raises(ValueError, match="n003"):
        imagenet_folder(tmp_path / "val", classes_file=listing)
    with pytest.raises(FileNotFoundError, match="classes_file"):
        imagenet_folder(tmp_path / "val", classes_file=tmp_path / "absent.txt")


def test_missing_root_empty_folder_and_bad_sizes_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        imagenet_folder(tmp_path / "absent")
    (tmp_path / "val" / "n0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images.*'val' subfolder"):
        imagenet_folder(tmp_path)
    with pytest.raises(ValueError, match="crop_size"):
        imagenet_folder(tmp_path, resize_size=100, crop_size=224)
    with pytest.raises(ValueError, match="resize_size"):
        imagenet_folder(tmp_path, resize_size=0)


def test_shared_imagenet_sample_loads_with_labels_from_classes_txt(shared_data):
    root = shared_data / "imagenet-sample"
    index_of = {}
    for line in (root / "classes.txt").read_text().splitlines():
        index, wnid, _ = line.split("\t")
        index_of[wnid] = int(index)
    data = imagenet_folder(root / "val", classes_file=root / "classes.txt")
    assert len(data) == 100 and len(data.classes) == 1_000
    for path, label in data.samples:
        assert label == index_of[path.parent.name]
    assert sorted(data.labels.tolist()) == sorted(index_of[p.parent.name] for p, _ in data.samples)
    loader = torch.utils.data.DataLoader(data, batch_size=50)
    batches = list(loader)
    images = torch.cat([x for x, _ in batches])
    assert images.shape == (100, 3, 224, 224) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0 and float(images.std()) > 0.1
    assert torch.equal(torch.cat([y for _, y in batches]), data.labels)
