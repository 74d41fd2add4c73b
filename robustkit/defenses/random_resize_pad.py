"""Random resizing and zero-padding at inference (Xie et al. 2018, "Mitigating adversarial effects through
randomization"), the input randomization the Defendr seed uses (its Sec. 4.3).

Each image is resized to a random size and placed at a random offset on a canvas of ``out_size``, filled with
``pad_value`` (the seed's zero padding). The whole batch is resampled by one ``grid_sample`` call: every image
gets its own affine map (scale and offset), so there is no per-image Python loop, and the layer is
differentiable with respect to its input.

The layer is random by design, so a single-forward gradient attack sees one draw and its number means little.
Evaluate it with EOT (``eot=`` on the gradient attacks, or ``AutoAttack(version="rand")``): Athalye, Carlini and
Wagner (2018) brought this defense to near 0% that way.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Size = Union[int, Sequence[int]]


def _pair(size: Size, name: str) -> Tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"RandomResizePad: {name} must be a positive int or (height, width), got {size}")
    return size


class RandomResizePad(nn.Module):
    """``model(pad(resize(x)))`` with a random size and offset per image.

    Args:
        model: the classifier that receives the ``out_size`` canvas (``None``: the module returns the canvas).
        out_size: the canvas ``(H_out, W_out)``; the resized image always fits inside it whole.
        min_scale, max_scale: the resized image is ``round(s * H) x round(s * W)`` with ``s`` uniform in
            ``[min_scale, max_scale]`` (Xie et al. draw 299..330 px for a 299 px input and a 331 px canvas:
            ``min_scale=1, max_scale=330/299``). For a fixed-size model such as the MNIST LeNet, use
            ``out_size`` equal to the input size and ``max_scale <= 1``.
        pad_value: the canvas outside the image (0.0 is the seed's zero padding).
        mode: ``"bilinear"`` or ``"nearest"`` resampling.
        seed: seeds the module's own generator, so an evaluation is reproducible; ``None`` draws from torch's
            global generator.

    Must be evaluated with EOT: see the module docstring.
    """

    def __init__(self, model: Optional[nn.Module], out_size: Size, *, min_scale: float = 0.9,
                 max_scale: float = 1.0, pad_value: float = 0.0, mode: str = "bilinear",
                 seed: Optional[int] = None):
        super().__init__()
        self.model = model
        self.out_size = _pair(out_size, "out_size")
        if not (0 < float(min_scale) < float("inf")) or not (0 < float(max_scale) < float("inf")):
            raise ValueError(f"RandomResizePad: min_scale and max_scale must be in (0, inf), got "
                             f"{min_scale} and {max_scale}")
        if min_scale > max_scale:
            raise ValueError(f"RandomResizePad: min_scale must be <= max_scale, got {min_scale} > {max_scale}")
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"RandomResizePad: mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.pad_value = float(pad_value)
        self.mode = mode
        self.generator: Optional[torch.Generator] = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(int(seed))

    def extra_repr(self) -> str:
        return (f"out_size={self.out_size}, scale=[{self.min_scale}, {self.max_scale}], "
                f"pad_value={self.pad_value}, mode={self.mode!r}")

    def draw(self, batch: int, height: int, width: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The random sizes ``(h, w)`` and top-left offsets ``(top, left)`` of ``batch`` images, as int64
        CPU tensors. Raises when the largest size cannot fit the canvas."""
        out_h, out_w = self.out_size
        if round(self.max_scale * height) > out_h or round(self.max_scale * width) > out_w:
            raise ValueError(f"RandomResizePad: out_size {self.out_size} is smaller than the input "
                             f"{(height, width)} resized by max_scale={self.max_scale}")
        u = torch.rand(batch, generator=self.generator, dtype=torch.float64)
        scale = self.min_scale + (self.max_scale - self.min_scale) * u
        h = (scale * height).round().clamp(min=1).long()
        w = (scale * width).round().clamp(min=1).long()
        # offsets uniform over the integers that keep the image whole inside the canvas
        top = (torch.rand(batch, generator=self.generator, dtype=torch.float64) * (out_h - h + 1)).floor().long()
        left = (torch.rand(batch, generator=self.generator, dtype=torch.float64) * (out_w - w + 1)).floor().long()
        return h, w, top, left

    def transform(self, x: Tensor) -> Tensor:
        """The random canvas for ``x`` (``[B, C, H, W]``), without the model."""
        if x.dim() != 4:
            raise ValueError(f"RandomResizePad: x must be [B, C, H, W], got shape {list(x.shape)}")
        batch, _, height, width = x.shape
        out_h, out_w = self.out_size
        h, w, top, left = self.draw(batch, height, width)
        return resize_pad(x, (out_h, out_w), h, w, top, left, pad_value=self.pad_value, mode=self.mode)

    def forward(self, x: Tensor) -> Tensor:
        canvas = self.transform(x)
        return canvas if self.model is None else self.model(canvas)


def resize_pad(x: Tensor, out_size: Tuple[int, int], h: Tensor, w: Tensor, top: Tensor, left: Tensor, *,
               pad_value: float = 0.0, mode: str = "bilinear") -> Tensor:
    """Resize image ``i`` of ``x`` to ``h[i] x w[i]`` and place it at ``(top[i], left[i])`` on an
    ``out_size`` canvas of ``pad_value``: one batched ``grid_sample``.

    With ``align_corners=False``, canvas pixel centre ``j + 0.5`` maps to the input position
    ``(j + 0.5 - left) * W / w``, the same sampling as ``F.interpolate(..., align_corners=False)`` of the
    image alone; ``padding_mode="border"`` clamps at the image's edge as ``interpolate`` does. Canvas pixels
    outside the placed box are then set to ``pad_value`` by an exact integer mask.
    """
    batch = x.shape[0]
    out_h, out_w = out_size
    dev, dt = x.device, x.dtype
    sx = w.to(torch.float64) / out_w          # box width as a fraction of the canvas
    sy = h.to(torch.float64) / out_h
    # normalised canvas coordinate u in [-1, 1] -> normalised input coordinate (u - c) / s, where c is the
    # box centre in normalised canvas coordinates
    cx = (2 * left.to(torch.float64) + w) / out_w - 1
    cy = (2 * top.to(torch.float64) + h) / out_h - 1
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = 1 / sx
    theta[:, 0, 2] = -cx / sx
    theta[:, 1, 1] = 1 / sy
    theta[:, 1, 2] = -cy / sy
    grid = F.affine_grid(theta.to(device=dev, dtype=dt), [batch, x.shape[1], out_h, out_w], align_corners=False)
    canvas = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
    rows = torch.arange(out_h, device=dev).view(1, out_h, 1)
    cols = torch.arange(out_w, device=dev).view(1, 1, out_w)
    top_d, left_d = top.to(dev).view(-1, 1, 1), left.to(dev).view(-1, 1, 1)
    inside = ((rows >= top_d) & (rows < top_d + h.to(dev).view(-1, 1, 1))
              & (cols >= left_d) & (cols < left_d + w.to(dev).view(-1, 1, 1))).unsqueeze(1)
    return torch.where(inside, canvas, canvas.new_full((), pad_value))
