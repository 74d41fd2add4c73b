"""ImageNet in the ImageFolder layout (``root/<wnid>/*.JPEG``), decoded lazily with Pillow."""
from __future__ import annotations

import pathlib
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from robustkit.datasets._common import require_dir

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def read_classes_file(path: Union[str, pathlib.Path]) -> tuple[list[str], dict[str, str]]:
    """Parse a class list: one class per line, ``index<TAB>wnid<TAB>name`` or just ``wnid``.

    Returns the wnids in sorted order (their position is the class index) and wnid -> readable name.
    A file whose index column disagrees with the sorted order is rejected, as it would mislabel classes.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"classes_file: {str(path)!r} does not exist")
    listed: list[tuple[Optional[int], str, str]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.strip().split("\t")
        if fields == [""]:
            continue
        if len(fields) == 1:
            listed.append((None, fields[0], fields[0]))
        elif fields[0].isdigit():
            listed.append((int(fields[0]), fields[1], fields[2] if len(fields) > 2 else fields[1]))
        else:
            raise ValueError(f"classes_file: {path}:{number}: expected 'index<TAB>wnid<TAB>name' or 'wnid', "
                             f"got {line!r}")
    wnids = sorted(wnid for _, wnid, _ in listed)
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"classes_file: {path} lists a wnid more than once")
    position = {wnid: index for index, wnid in enumerate(wnids)}
    for index, wnid, _ in listed:
        if index is not None and index != position[wnid]:
            raise ValueError(f"classes_file: {path} gives {wnid} index {index}, but its position in sorted "
                             f"order is {position[wnid]}")
    return wnids, {wnid: name for _, wnid, name in listed}


def resize_center_crop(image: Image.Image, resize_size: int, crop_size: int) -> Tensor:
    """RGB, shorter side to ``resize_size`` (bilinear), centre ``crop_size`` square -> float32 [3, S, S] in [0, 1].

    Same geometry as torchvision's ``Resize(resize_size)`` + ``CenterCrop(crop_size)`` on PIL images.
    """
    image = image.convert("RGB")
    width, height = image.size
    if width <= height:
        new_size = (resize_size, int(resize_size * height / width))
    else:
        new_size = (int(resize_size * width / height), resize_size)
    image = image.resize(new_size, Image.BILINEAR)
    width, height = image.size
    if width < crop_size or height < crop_size:
        raise ValueError(f"crop_size {crop_size} exceeds the resized image {width}x{height}")
    left = int(round((width - crop_size) / 2.0))
    top = int(round((height - crop_size) / 2.0))
    image = image.crop((left, top, left + crop_size, top + crop_size))
    array = np.asarray(image, dtype=np.uint8)                         # [S, S, 3]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)


class ImageFolderDataset(Dataset):
    """``root/<wnid>/<image>`` files with labels from a class list; images are decoded on access, so the
    dataset scales to the 50,000-image validation set and works with ``DataLoader(num_workers=...)``.

    Attributes: ``samples`` (list of (path, label)), ``classes`` (wnids, index = position),
    ``class_names`` (wnid -> readable name).
    """

    def __init__(self, samples: list[tuple[pathlib.Path, int]], classes: list[str], class_names: dict[str, str],
                 resize_size: int, crop_size: int):
        self.samples = samples
        self.classes = classes
        self.class_names = class_names
        self.resize_size = resize_size
        self.crop_size = crop_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            pixels = resize_center_crop(image, self.resize_size, self.crop_size)
        return pixels, torch.tensor(label, dtype=torch.int64)

    @property
    def labels(self) -> Tensor:
        """int64 ``[N]`` labels of all samples (no decoding)."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __repr__(self) -> str:
        return f"ImageFolderDataset(n={len(self)}, classes={len(self.classes)}, crop_size={self.crop_size})"


def imagenet_folder(root: Union[str, pathlib.Path], *, classes_file: Optional[Union[str, pathlib.Path]] = None,
                    resize_size: int = 256, crop_size: int = 224) -> ImageFolderDataset:
    """ImageNet-style folder: ``root/<wnid>/*.JPEG`` -> float32 ``[3, crop_size, crop_size]`` in [0, 1].

    The class index of a wnid is its position in sorted order of ``classes_file`` (``index<TAB>wnid<TAB>name``
    lines, as ILSVRC-2012's usual index; or one wnid per line), or of the subfolders when no file is given.
    Give the classes file when the folder holds only some classes (a sample), or the labels will not be
    ImageNet's. Preprocessing is the standard evaluation one: shorter side ``resize_size``, centre crop.

    Example::

        >>> data = imagenet_folder("../shared/data/imagenet-sample/val",
        ...                        classes_file="../shared/data/imagenet-sample/classes.txt")
        >>> x, y = data[0]               # x: [3, 224, 224] float32 in [0, 1]; y: int64 scalar
    """
    folder = require_dir(root)
    for name, value in (("resize_size", resize_size), ("crop_size", crop_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if crop_size > resize_size:
        raise ValueError(f"crop_size ({crop_size}) must be <= resize_size ({resize_size})")
    subfolders = sorted(path.name for path in folder.iterdir() if path.is_dir())
    if classes_file is None:
        classes, class_names = subfolders, {wnid: wnid for wnid in subfolders}
    else:
        classes, class_names = read_classes_file(classes_file)
    index_of = {wnid: index for index, wnid in enumerate(classes)}
    samples: list[tuple[pathlib.Path, int]] = []
    for wnid in subfolders:
        files = sorted(path for path in (folder / wnid).iterdir()
                       if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS)
        if files and wnid not in index_of:
            raise ValueError(f"classes_file: subfolder {wnid!r} of {str(folder)!r} is not in the class list")
        samples.extend((path, index_of[wnid]) for path in files)
    if not samples:
        hint = " (it has a 'val' subfolder: pass that as root)" if (folder / "val").is_dir() else ""
        raise FileNotFoundError(f"root: no images found under {str(folder)!r}; expected "
                                f"root/<wnid>/*.JPEG{hint}")
    return ImageFolderDataset(samples, classes, class_names, resize_size, crop_size)
