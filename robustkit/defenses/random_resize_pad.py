"""Random resizing and zero-padding at inference (Xie et al. 2018, "Mitigating adversarial effects through
randomization"), the input randomization the Defendr seed uses (its Sec. 4.3).

Each image is resized to a random size and placed at a random offset on a canvas of ``out_size``, filled with
``pad_value`` (the seed's zero padding). The whole batch is resampled by two batched matmuls: every image
gets its own interpolation matrices (scale and offset), so there is no per-image Python loop, and the layer is
differentiable with respect to its input.

The layer is random by design, so a single-forward gradient attack sees one draw and its number means little.
Evaluate it with EOT (``eot=`` on the gradient attacks, or ``AutoAttack(version="rand")``): Athalye, Carlini and
Wagner (2018) brought this defense to near 0% that way.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
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


def _interpolation_matrix(out_len: int, in_len: int, size: Tensor, offset: Tensor, mode: str,
                          dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[B, out_len, in_len]``: row ``j`` of image ``b`` holds the weights with which canvas row ``j`` mixes
    the input rows, for the input resized to ``size[b]`` and placed at ``offset[b]``. Rows outside the placed
    span are zero (the padding). Two scatters into zeros build it (comparisons against every column cost
    4x more, measured)."""
    batch = size.shape[0]
    coord = torch.float64 if dtype == torch.float64 else torch.float32   # coordinates as exact as the image
    j = torch.arange(out_len, device=device, dtype=coord).view(1, -1)
    size_f = size.to(device=device, dtype=coord).view(-1, 1)
    local = j - offset.to(device=device, dtype=coord).view(-1, 1)        # position inside the span
    inside = ((local >= 0) & (local < size_f)).to(dtype)
    weights = torch.zeros(batch, out_len, in_len, dtype=dtype, device=device)
    if mode == "nearest":
        # F.interpolate(mode="nearest"): source index floor(dst * in / out)
        src = (local * in_len / size_f).floor().clamp(0, in_len - 1).long()
        return weights.scatter_(2, src.unsqueeze(-1), inside.unsqueeze(-1))
    # F.interpolate(mode="bilinear", align_corners=False): source coordinate (dst + 0.5) * in / out - 0.5,
    # clamped at 0 below (PyTorch's area_pixel_compute_source_index), the upper neighbour clamped to the edge
    src = ((local + 0.5) * in_len / size_f - 0.5).clamp_min(0)
    low = src.floor().clamp(max=in_len - 1)
    frac = (src - low).to(dtype)
    high = (low + 1).clamp(max=in_len - 1).long()
    weights.scatter_(2, low.long().unsqueeze(-1), ((1 - frac) * inside).unsqueeze(-1))
    return weights.scatter_add_(2, high.unsqueeze(-1), (frac * inside).unsqueeze(-1))


def resize_pad(x: Tensor, out_size: Tuple[int, int], h: Tensor, w: Tensor, top: Tensor, left: Tensor, *,
               pad_value: float = 0.0, mode: str = "bilinear") -> Tensor:
    """Resize image ``i`` of ``x`` to ``h[i] x w[i]`` and place it at ``(top[i], left[i])`` on an
    ``out_size`` canvas of ``pad_value``, for the whole batch at once.

    Resizing along one axis and then the other is what ``F.interpolate`` does for bilinear and nearest
    modes, so the canvas is ``A_h @ x @ A_w^T`` with per-image interpolation matrices (two batched matmuls;
    ``A`` also zeroes the padding). The sampling equals ``F.interpolate(..., align_corners=False)`` of the
    image alone (``tests/reference/input_defenses.py``).
    """
    out_h, out_w = out_size
    rows = _interpolation_matrix(out_h, x.shape[-2], h, top, mode, x.dtype, x.device)       # [B, H_out, H]
    cols = _interpolation_matrix(out_w, x.shape[-1], w, left, mode, x.dtype, x.device)      # [B, W_out, W]
    canvas = rows.unsqueeze(1) @ x @ cols.transpose(1, 2).unsqueeze(1)                      # [B, C, H_out, W_out]
    if pad_value != 0.0:
        inside = rows.sum(2, keepdim=True).unsqueeze(1) * cols.sum(2).view(cols.shape[0], 1, 1, -1)
        canvas = canvas + pad_value * (1 - inside)
    return canvas
