"""Random resizing and zero-padding at inference (Xie et al. 2018, "Mitigating adversarial effects through
randomization"), the input randomization the Defendr seed uses (its Sec. 4.3).

Each image is resized to a random size and placed at a random offset on a canvas of ``out_size``, filled with
``pad_value`` (the seed's zero padding). The whole batch is resampled in one call: every image gets its own
interpolation taps (scale and offset, looked up in a per-shape table), the row pass is one sparse
gather-and-sum and the column pass one batched matmul, so there is no per-image Python loop, and the layer is
differentiable (twice) with respect to its input.

The layer is random by design, so a single-forward gradient attack sees one draw and its number means little.
Evaluate it with EOT (``eot=`` on the gradient attacks, or ``AutoAttack(version="rand")``): Athalye, Carlini and
Wagner (2018) brought this defense to near 0% that way.
"""
from __future__ import annotations

import functools
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
        # draw() keeps every image whole inside the canvas, so the placement needs no check here
        return _resize_pad(x, (out_h, out_w), h, w, top, left, self.pad_value, self.mode)

    def forward(self, x: Tensor) -> Tensor:
        canvas = self.transform(x)
        return canvas if self.model is None else self.model(canvas)


def _interpolation_taps(out_len: int, in_len: int, size: Tensor, offset: Tensor, mode: str, dtype: torch.dtype,
                        device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """``(index, weight, inside)``: canvas row ``j`` of image ``b`` mixes the input rows ``index[b, j, :]``
    (``[B, out_len, T]``, T = 2 taps for bilinear, 1 for nearest) with ``weight[b, j, :]``, for the input
    resized to ``size[b]`` and placed at ``offset[b]``; ``inside[b, j]`` is 1 on the placed span, 0 on the
    padding (where the weights are 0)."""
    coord = torch.float64 if dtype == torch.float64 else torch.float32   # coordinates as exact as the image
    size_f = size.to(device=device, dtype=coord).view(-1, 1)
    local = torch.arange(out_len, device=device, dtype=coord) - offset.to(device=device, dtype=coord).view(-1, 1)
    inside = ((local >= 0) & (local < size_f)).to(dtype)                  # position inside the span
    if mode == "nearest":
        # F.interpolate(mode="nearest"): source index floor(dst * in / out)
        src = (local * in_len / size_f).floor_().clamp_(0, in_len - 1).long()
        return src.unsqueeze(-1), inside.unsqueeze(-1), inside
    # F.interpolate(mode="bilinear", align_corners=False): source coordinate (dst + 0.5) * in / out - 0.5,
    # clamped at 0 below (PyTorch's area_pixel_compute_source_index), the upper neighbour clamped to the edge
    src = ((local + 0.5) * in_len / size_f - 0.5).clamp_min_(0)
    low = src.floor().clamp_(max=in_len - 1)
    frac = (src - low).to(dtype)
    high = (low + 1).clamp_(max=in_len - 1)
    index = torch.stack((low, high), -1).long()
    weight = torch.stack(((1 - frac) * inside, frac * inside), -1)
    return index, weight, inside


@functools.lru_cache(maxsize=16)
def _tap_table(out_len: int, in_len: int, mode: str, dtype: torch.dtype,
               device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """The taps of every placement at once: row ``(s - 1) * 2 * out_len + out_len + k`` of the flat tables
    holds canvas position ``k`` (``-out_len <= k < out_len``) of an input resized to ``s`` (``1 <= s <=
    out_len``) and placed at 0. Computed once per shape by :func:`_interpolation_taps` itself, so a lookup
    returns exactly what computing the draw's taps directly would (a call then costs a few lookups instead
    of ~25 small ops, which dominate at MNIST sizes)."""
    sizes = torch.arange(1, out_len + 1, device=device)
    index, weight, inside = _interpolation_taps(2 * out_len, in_len, sizes, torch.full_like(sizes, out_len), mode,
                                                dtype, device)
    taps = index.shape[-1]
    return index.reshape(-1, taps), weight.reshape(-1, taps), inside.reshape(-1)


def _placed_taps(out_len: int, in_len: int, size: Tensor, offset: Tensor, mode: str, dtype: torch.dtype,
                 device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`_interpolation_taps` for these sizes and offsets, read from :func:`_tap_table`."""
    index, weight, inside = _tap_table(out_len, in_len, mode, dtype, torch.device(device))
    size, offset = size.to(device), offset.to(device)
    start = (size - 1) * (2 * out_len) + (out_len - offset)
    rows = (start.view(-1, 1) + torch.arange(out_len, device=device)).view(-1)
    shape = (size.shape[0], out_len)
    return (index.index_select(0, rows).view(*shape, -1), weight.index_select(0, rows).view(*shape, -1),
            inside.index_select(0, rows).view(shape))


def _interpolation_matrix(out_len: int, in_len: int, taps: Tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """``[B, out_len, in_len]``: the taps as dense per-image interpolation matrices, rows outside the placed
    span zero (the padding). One scatter-add into zeros builds it, low tap first, so a row whose two taps
    coincide at the edge holds ``(1 - frac) + frac`` (comparisons against every column cost 4x more,
    measured)."""
    index, weight, _ = taps
    matrix = torch.zeros(index.shape[0], out_len, in_len, dtype=weight.dtype, device=weight.device)
    return matrix.scatter_add_(2, index, weight)


class _ResizePad(torch.autograd.Function):
    """``A_h @ x @ A_w^T`` for per-image interpolation matrices, the row pass sparse.

    Forward: the row pass reads each canvas row's (at most two) input rows with one ``embedding_bag`` (a
    gather and weighted sum in one kernel), then the column pass is a batched matmul with the dense ``A_w``.
    At B = 256 MNIST images this is ~20% faster than two dense matmuls, and the gap grows with the image side
    (the dense row pass costs a multiply-add per input row per canvas pixel, the sparse one two). Backward:
    ``A_h^T @ g @ A_w``, two dense matmuls (``embedding_bag``'s own backward is 2x slower, measured); it is
    written in differentiable ops, so a double backward works.
    """

    @staticmethod
    def forward(ctx, x: Tensor, row_index: Tensor, row_weight: Tensor, cols: Tensor, in_h: int) -> Tensor:
        batch, channels, _, in_w = x.shape
        out_h = row_index.shape[1]
        # [B, H, C, W] rows as the table: row (b, k) of the table is input row k of image b, all channels
        table = x.transpose(1, 2).reshape(batch * in_h, channels * in_w)
        offset = torch.arange(batch, device=x.device).view(-1, 1, 1) * in_h
        picked = F.embedding_bag((row_index + offset).view(-1, row_index.shape[2]), table,
                                 per_sample_weights=row_weight.reshape(-1, row_weight.shape[2]), mode="sum")
        resized = picked.view(batch, out_h, channels, in_w).transpose(1, 2)                # [B, C, H_out, W]
        ctx.save_for_backward(row_index, row_weight, cols)
        ctx.in_h = in_h
        return resized @ cols.transpose(1, 2).unsqueeze(1)                                 # [B, C, H_out, W_out]

    @staticmethod
    def backward(ctx, grad: Tensor):
        row_index, row_weight, cols = ctx.saved_tensors
        rows = _interpolation_matrix(row_index.shape[1], ctx.in_h, (row_index, row_weight, None))
        return rows.transpose(1, 2).unsqueeze(1) @ grad @ cols.unsqueeze(1), None, None, None, None


def resize_pad(x: Tensor, out_size: Tuple[int, int], h: Tensor, w: Tensor, top: Tensor, left: Tensor, *,
               pad_value: float = 0.0, mode: str = "bilinear") -> Tensor:
    """Resize image ``i`` of ``x`` to ``h[i] x w[i]`` and place it at ``(top[i], left[i])`` on an
    ``out_size`` canvas of ``pad_value``, for the whole batch at once.

    Resizing along one axis and then the other is what ``F.interpolate`` does for bilinear and nearest
    modes, so the canvas is ``A_h @ x @ A_w^T`` with per-image interpolation matrices (``A`` also zeroes
    the padding); :class:`_ResizePad` computes it with a sparse row pass. The sampling equals
    ``F.interpolate(..., align_corners=False)`` of the image alone (``tests/reference/input_defenses.py``).
    Every image must lie whole inside the canvas.
    """
    if x.dim() != 4:
        raise ValueError(f"resize_pad: x must be [B, C, H, W], got shape {list(x.shape)}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"resize_pad: mode must be 'bilinear' or 'nearest', got {mode!r}")
    for size, offset, names, canvas in ((h, top, ("h", "top"), out_size[0]), (w, left, ("w", "left"), out_size[1])):
        if size.shape != (x.shape[0],) or offset.shape != (x.shape[0],):
            raise ValueError(f"resize_pad: {names[0]} and {names[1]} must be [B] = [{x.shape[0]}] tensors, got "
                             f"{list(size.shape)} and {list(offset.shape)}")
        if bool((size < 1).any() | (offset < 0).any() | (offset + size > canvas).any()):
            raise ValueError(f"resize_pad: every image must fit the canvas: 1 <= {names[0]} and 0 <= {names[1]} "
                             f"and {names[1]} + {names[0]} <= {canvas}")
    return _resize_pad(x, out_size, h, w, top, left, float(pad_value), mode)


def _resize_pad(x: Tensor, out_size: Tuple[int, int], h: Tensor, w: Tensor, top: Tensor, left: Tensor,
                pad_value: float, mode: str) -> Tensor:
    out_h, out_w = out_size
    batch, _, in_h, in_w = x.shape
    if (out_h, in_h) == (out_w, in_w):
        # a square canvas from a square input (the usual case): both axes' taps in one lookup
        taps = _placed_taps(out_h, in_h, torch.cat((h, w)), torch.cat((top, left)), mode, x.dtype, x.device)
        taps_h = tuple(t[:batch] for t in taps)
        taps_w = tuple(t[batch:] for t in taps)
    else:
        taps_h = _placed_taps(out_h, in_h, h, top, mode, x.dtype, x.device)
        taps_w = _placed_taps(out_w, in_w, w, left, mode, x.dtype, x.device)
    cols = _interpolation_matrix(out_w, in_w, taps_w)
    canvas = _ResizePad.apply(x, taps_h[0], taps_h[1], cols, in_h)
    if pad_value != 0.0:
        # the exact 0/1 mask of the placed image, so that the image's own pixels stay untouched
        inside = taps_h[2].view(batch, 1, out_h, 1) * taps_w[2].view(batch, 1, 1, out_w)
        canvas = canvas + pad_value * (1 - inside)
    return canvas
