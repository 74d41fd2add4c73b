"""Models and images the benchmarks share: the zoo's trained MNIST models, the correctly classified test
images attacks start from, seeded ResNet-50s and the ImageNet sample for GPU runs, and how an attack's
output is scored (success, median L2) the same way for every method.

    from data import correctly_classified, mnist_lenet, attack_outcome
    model = mnist_lenet()                      # trained once, then loaded from the zoo's cache
    x, y = correctly_classified(model, 256)    # the first 256 MNIST test images it gets right
"""
from __future__ import annotations

import pathlib
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

REPO = pathlib.Path(__file__).resolve().parents[1]
#: the ImageNet sample: the copy tools/fetch_gpu_wheels.sh carries to GPU machines, else the shared data
IMAGENET_SAMPLE = next((p for p in (REPO / ".data" / "imagenet-sample",
                                    REPO.parent / "shared" / "data" / "imagenet-sample") if p.is_dir()),
                       REPO / ".data" / "imagenet-sample")


def trainable(model: nn.Module) -> nn.Module:
    """Parameters with ``requires_grad=True``, as users load models (the zoo returns them that way too, but a
    benchmark must not depend on it: attacks on frozen models skip the parameter-gradient bookkeeping)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def mnist_model(name: str = "lenet", *, seed: int = 0, device: Union[str, torch.device] = "cpu",
                n_train: Optional[int] = None) -> nn.Module:
    """The zoo's MNIST model ``name`` trained with ``seed`` (on the first ``n_train`` training images when
    given: quick runs), in eval mode; trained on first use, then cached under ``$ROBUSTKIT_CACHE`` (default
    ``~/.cache/robustkit``)."""
    from robustkit.zoo import trained_mnist_model

    model = trained_mnist_model(name, seed=seed, n_train=n_train, progress=False)
    return trainable(model.eval().to(device))


def mnist_lenet(seed: int = 0, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """The trained MNIST LeNet most benchmarks attack."""
    return mnist_model("lenet", seed=seed, device=device)


def clean_wong_cnn() -> nn.Module:
    """Wong et al.'s small CNN after one clean epoch on all of MNIST (Adam 1e-3, batch 100), cached like the
    zoo's models. Every method fine-tunes it, as the LeNet runs fine-tune the zoo's LeNet: one adversarial pass
    over a few thousand images from random weights leaves the network near chance, where the accuracy check
    cannot tell a correct trainer from a broken one."""
    import robustkit as rk
    from robustkit.models import wong_mnist_cnn

    def train(model: nn.Module) -> nn.Module:
        rk.training.fit(model, rk.datasets.mnist("train"), None, epochs=1, batch_size=100, optimizer="adam",
                        lr=1e-3, seed=0, progress=False)
        return model
    path = rk.zoo.default_cache_dir() / f"bench-wong-mnist-cnn-clean-e1-v{rk.__version__}.pt"
    torch.manual_seed(0)   # the initialisation the cached weights were trained from
    return rk.zoo.cached_model(wong_mnist_cnn(), path, train).train()


def mnist_split(split: str = "test") -> Tuple[torch.Tensor, torch.Tensor]:
    """All images ([N, 1, 28, 28] in [0, 1]) and labels of the shipped MNIST ``split``."""
    from robustkit.datasets import mnist

    return mnist(split).tensors


def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """The model's labels for ``x``, in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])


def correctly_classified(model: nn.Module, count: int, x: Optional[torch.Tensor] = None,
                         y: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images of ``x, y`` (default: the MNIST test split) that ``model`` classifies
    correctly: attacks are scored on images they have to change. Exits if there are fewer."""
    if x is None or y is None:
        x, y = mnist_split("test")
    device = next(model.parameters()).device
    keep = torch.zeros(x.shape[0], dtype=torch.bool)
    start, found = 0, 0
    while found < count and start < x.shape[0]:  # look at 2x what is still missing, then more
        stop = min(x.shape[0], start + max(2 * (count - found), 64))
        keep[start:stop] = predict(model, x[start:stop].to(device)).cpu() == y[start:stop]
        found = int(keep[:stop].sum())
        start = stop
    if found < count:
        raise SystemExit(f"correctly_classified: the model gets only {found} of {x.shape[0]} images right, "
                         f"{count} asked for")
    index = keep.nonzero().squeeze(1)[:count]
    return x[index].contiguous(), y[index].contiguous()


def attack_outcome(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv) -> dict:
    """Success rate (prediction of ``adv`` != ``y``), median L2 of ``adv - x`` over the successes and whether
    ``adv`` lies in [0, 1], computed the same way for every method (``adv`` may be a numpy array)."""
    adv = torch.as_tensor(np.asarray(adv) if not isinstance(adv, torch.Tensor) else adv).float().to(x.device)
    success = predict(model, adv) != y
    l2 = (adv - x).flatten(1).norm(dim=1)
    return {"success": success.float().mean().item(),
            "median_l2": l2[success].median().item() if success.any() else float("nan"),
            "in_box": bool(adv.min() >= 0 and adv.max() <= 1)}


def random_resnets(count: int, device: Union[str, torch.device] = "cpu") -> list:
    """``count`` ResNet-50s with seeded random weights (seeds 0, 1, ...), in eval mode: for timing on
    machines that reach no weight files."""
    from robustkit.models import resnet50

    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(trainable(resnet50().eval().to(device)))
    return models


def imagenet_images(count: int, size: int) -> Tuple[torch.Tensor, Optional[torch.Tensor], str]:
    """``count`` images in [0, 1] at ``size`` px with their labels and where they came from: the ImageNet
    sample cycled to ``count`` when present, else seeded noise (labels ``None``)."""
    if IMAGENET_SAMPLE.is_dir():
        from robustkit.datasets import imagenet_folder

        data = imagenet_folder(IMAGENET_SAMPLE / "val", classes_file=IMAGENET_SAMPLE / "classes.txt",
                               crop_size=size, resize_size=max(size, size * 8 // 7))
        pairs = [data[i % len(data)] for i in range(count)]
        return (torch.stack([p[0] for p in pairs]), torch.tensor([int(p[1]) for p in pairs]),
                "imagenet-sample")
    generator = torch.Generator().manual_seed(0)
    return torch.rand(count, 3, size, size, generator=generator), None, "seeded noise"
