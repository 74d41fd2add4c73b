"""Plain supervised training of a classifier, and batched prediction.

:func:`train_classifier` is the project's cross-entropy loop (used by the model zoo, the retraining defense and
the command line); :func:`predict` and :func:`predict_labels` run a model over tensors or a dataset in eval mode.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from robustkit.datasets import ImageTensorDataset
from robustkit.nn import module_device

Device = Union[str, torch.device]


def batches(dataset: Dataset, batch_size: int, generator: Optional[torch.Generator] = None,
            shuffle: bool = False) -> Iterator[Tuple[Tensor, Tensor]]:
    """(x, y) batches of ``dataset``. In-memory datasets are indexed a whole batch at a time (no per-sample
    Python work); any other dataset goes through a DataLoader with the same seeded order."""
    if isinstance(dataset, (ImageTensorDataset, TensorDataset)):
        count = len(dataset)
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        for start in range(0, count, batch_size):
            yield dataset[order[start:start + batch_size]]
    else:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def check_positive(name: str, value, kind=int) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``value`` is a positive ``kind`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")


def train_classifier(model: nn.Module, dataset: Dataset, *, epochs: int = 1, lr: float = 1e-3,
                     batch_size: int = 64, seed: int = 0, device: Device = "cpu", optimizer: str = "adam",
                     momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "constant",
                     progress: bool = True) -> nn.Module:
    """Train ``model`` (logits out) with cross-entropy on ``dataset`` of (image in [0, 1], label) pairs.

    ``optimizer`` is ``"adam"`` or ``"sgd"`` (with ``momentum``, Nesterov off). ``schedule="cosine"``
    decays the learning rate from ``lr`` to 0 over all steps (per step), which buys most of a second epoch's
    accuracy in one epoch; ``"constant"`` keeps it. The batch order and any
    randomness inside the model (dropout) come from ``seed`` alone, so the same call gives the same weights on
    the same machine and thread count; the global RNG state is left as it was. Returns the model, moved to
    ``device`` and left in eval mode.

    Example::

        >>> model = train_classifier(LeNet(), robustkit.datasets.mnist("train"), epochs=1, lr=2e-3, seed=0)
    """
    check_positive("epochs", epochs)
    check_positive("batch_size", batch_size)
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        raise ValueError(f"lr must be a positive float, got {lr!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    model = model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer = (torch.optim.Adam(params, lr=lr, weight_decay=weight_decay) if optimizer == "adam"
                                  else torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay))
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(dataset) // batch_size)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
                 if schedule == "cosine" else None)
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.train()
        bar = tqdm(total=epochs * steps_per_epoch, desc=f"train {type(model).__name__}", disable=not progress,
                   unit="batch")
        for epoch in range(epochs):
            for step, (x, y) in enumerate(batches(dataset, batch_size, generator, shuffle=True)):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if scheduler is not None:
                    scheduler.step()
                bar.update(1)
                if progress and step % 50 == 0:   # the .item() sync only when someone is watching
                    bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
        bar.close()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1000, device: Optional[Device] = None) -> Tensor:
    """Predicted classes (int64 [N], on the CPU) of ``model`` in eval mode over the images ``x``, in chunks of
    ``batch_size`` moved to ``device`` (default: the model's). The model's training flag is restored."""
    check_positive("batch_size", batch_size)
    device = module_device(model) if device is None else device
    was_training = model.training
    model.eval()
    try:
        chunks = [model(x[s:s + batch_size].to(device)).argmax(dim=1).cpu() for s in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.int64)


@torch.no_grad()
def predict_labels(model: nn.Module, dataset: Dataset, batch_size: int = 1000,
                   device: Optional[Device] = None) -> Tuple[Tensor, Tensor]:
    """(predicted, true) int64 label tensors [N] of ``model`` over ``dataset``, in dataset order."""
    check_positive("batch_size", batch_size)
    device = module_device(model) if device is None else device
    was_training = model.training
    model.eval()
    predicted, labels = [], []
    try:
        for x, y in batches(dataset, batch_size):
            predicted.append(model(x.to(device)).argmax(dim=1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(predicted), torch.cat(labels)


def evaluate_accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 1000,
                      device: Optional[Device] = None) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` in eval mode (the model's mode is restored afterwards)."""
    predicted, labels = predict_labels(model, dataset, batch_size, device)
    return float((predicted == labels).float().mean())


__all__ = ["train_classifier", "predict", "predict_labels", "evaluate_accuracy", "batches",
           "check_positive"]
