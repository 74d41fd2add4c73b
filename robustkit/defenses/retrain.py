"""Retraining with labelled adversarial images, then re-attacking: the defense the retraining seed evaluates
(Thakur, Ding and Li, Sec. 3 and Fig. 1; the columns of its Tables 1 to 6).

1. Attack the classifier on ``n_adversarial`` training images and on the test images.
2. Label the adversarial training images with a true-label generator (:class:`KNNLabeler`), or with the
   labels of the images they were made from (``labels="source"``, the comparison the seed argues against).
3. Fine-tune a copy of the classifier (or train a fresh one) on the original plus the labelled adversarial
   training images.
4. Measure accuracy on the original and the adversarial test images, and the fooling ratio of the attack
   rebuilt against the retrained classifier (white-box attacker) and of the old adversarial images
   (an attacker that cannot see the new model).

Example::

    retrainer = Retrainer(model, attack=lambda m: FGSM(m, eps=0.07), labeler=KNNLabeler(300),
                          n_adversarial=10000, epochs=2)
    report = retrainer.run((x_train, y_train), (x_test, y_test))
    print(report.as_dict())
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from robustkit.defenses.labeler import KNNLabeler
from robustkit.eval.metrics import fooling_ratio
from robustkit.models.train import train_classifier

Data = Union[Tuple[Tensor, Tensor], TensorDataset]
AttackFactory = Callable[[nn.Module], Callable[..., Tensor]]


@dataclass
class RetrainingReport:
    """One row of the seed's tables (rates in [0, 1]).

    ``accuracy_*_before`` are the original classifier's; ``accuracy_original`` / ``accuracy_adversarial`` the
    retrained one's on the clean test images and on the adversarial test images made against the original
    classifier (true labels). ``fooling_ratio_after`` rebuilds the attack against the retrained classifier;
    ``fooling_ratio_after_transfer`` replays the old adversarial test images. ``labeler_accuracy``: share of
    adversarial training images the labeler gave their source label (nan without a labeler).
    """

    n_adversarial: int
    labels: str
    n_fooling_dropped: int
    accuracy_original_before: float
    accuracy_adversarial_before: float
    fooling_ratio_before: float
    accuracy_original: float
    accuracy_adversarial: float
    fooling_ratio_after: float
    fooling_ratio_after_transfer: float
    labeler_accuracy: float

    def as_dict(self) -> dict:
        return asdict(self)


class Retrainer:
    """Retrain a classifier on original plus labelled adversarial images and re-attack it.

    Args:
        model: the trained classifier (images in [0, 1] -> logits); it is not modified.
        attack: a factory ``model -> attack`` where ``attack(x, y)`` returns adversarial images, e.g.
            ``lambda m: FGSM(m, eps=0.07)`` or ``lambda m: GAP(m).fit(loader)``; called once for the original
            and once for the retrained classifier.
        labeler: the true-label generator; fitted on the training set here when it is not fitted yet.
        n_adversarial: adversarial training images (taken from a seeded permutation of the training set).
        epochs, lr, batch_size, optimizer: the retraining run (:func:`robustkit.models.train.train_classifier`).
        labels: ``"labeler"`` (the seed's method) or ``"source"`` (the images' own labels, for comparison).
        mode: ``"finetune"`` continues from a copy of ``model``; ``"retrain"`` trains ``model_factory()``
            from scratch.
        attack_batch: images per attack call. seed: the subset and the training order.

    Adversarial images the labeler puts in a fooling class (label ``>= num_classes``) are dropped from the
    retraining set (counted in the report): the classifier has no output for them.
    """

    def __init__(self, model: nn.Module, attack: AttackFactory, labeler: Optional[KNNLabeler] = None,
                 n_adversarial: int = 1000, epochs: int = 1, *, lr: float = 1e-3, batch_size: int = 128,
                 optimizer: str = "adam", labels: str = "labeler", mode: str = "finetune",
                 model_factory: Optional[Callable[[], nn.Module]] = None, attack_batch: int = 500,
                 seed: int = 0, progress: bool = False):
        if not callable(attack):
            raise TypeError("attack must be a factory model -> attack, e.g. lambda m: FGSM(m, eps=0.07)")
        if labels not in ("labeler", "source"):
            raise ValueError(f"labels must be 'labeler' or 'source', got {labels!r}")
        if labels == "labeler" and labeler is None:
            raise ValueError("labels='labeler' needs a labeler (or pass labels='source')")
        if mode not in ("finetune", "retrain"):
            raise ValueError(f"mode must be 'finetune' or 'retrain', got {mode!r}")
        if mode == "retrain" and model_factory is None:
            raise ValueError("mode='retrain' needs model_factory, a callable returning a fresh classifier")
        if isinstance(n_adversarial, bool) or not isinstance(n_adversarial, int) or n_adversarial < 1:
            raise ValueError(f"n_adversarial must be a positive int, got {n_adversarial!r}")
        self.model, self.attack, self.labeler = model, attack, labeler
        self.n_adversarial, self.epochs, self.lr, self.batch_size = n_adversarial, epochs, lr, batch_size
        self.optimizer, self.labels, self.mode, self.model_factory = optimizer, labels, mode, model_factory
        self.attack_batch, self.seed, self.progress = attack_batch, seed, progress
        self.retrained_model: Optional[nn.Module] = None

    def run(self, train_data: Data, test_data: Data) -> RetrainingReport:
        """Runs steps 1-4 on ``(x, y)`` tensor pairs (or TensorDataset-likes); returns the report and keeps
        the retrained classifier in ``self.retrained_model``."""
        x_train, y_train = _tensors(train_data, "train_data")
        x_test, y_test = _tensors(test_data, "test_data")
        if self.n_adversarial > x_train.shape[0]:
            raise ValueError(f"n_adversarial ({self.n_adversarial}) exceeds the training set ({x_train.shape[0]})")
        device = _device(self.model)
        generator = torch.Generator().manual_seed(self.seed)
        subset = torch.randperm(x_train.shape[0], generator=generator)[:self.n_adversarial]
        attack = self.attack(self.model)
        adv_train = self._attack(attack, x_train[subset], y_train[subset], device)
        adv_test = self._attack(attack, x_test, y_test, device)
        clean_pred, adv_pred = _predict(self.model, x_test, device), _predict(self.model, adv_test, device)

        labeler_accuracy = float("nan")
        if self.labeler is not None:
            if not hasattr(self.labeler, "index_"):
                self.labeler.fit(x_train, y_train)
            labeler_labels = self.labeler.predict(adv_train).cpu()
            labeler_accuracy = (labeler_labels == y_train[subset]).double().mean().item()
        new_labels = labeler_labels if self.labels == "labeler" else y_train[subset]
        num_outputs = _num_outputs(self.model, x_test[:1], device)
        keep = new_labels < num_outputs
        retrain_set = TensorDataset(torch.cat([x_train, adv_train[keep]]), torch.cat([y_train, new_labels[keep]]))

        model = copy.deepcopy(self.model) if self.mode == "finetune" else self.model_factory()
        model = train_classifier(model, retrain_set, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                 seed=self.seed, device=device, optimizer=self.optimizer, progress=self.progress)
        self.retrained_model = model.eval()
        new_clean = _predict(model, x_test, device)
        new_adv_old = _predict(model, adv_test, device)
        readv_test = self._attack(self.attack(model), x_test, y_test, device)
        return RetrainingReport(
            n_adversarial=self.n_adversarial, labels=self.labels, n_fooling_dropped=int((~keep).sum()),
            accuracy_original_before=_accuracy(clean_pred, y_test),
            accuracy_adversarial_before=_accuracy(adv_pred, y_test),
            fooling_ratio_before=fooling_ratio(clean_pred, adv_pred),
            accuracy_original=_accuracy(new_clean, y_test), accuracy_adversarial=_accuracy(new_adv_old, y_test),
            fooling_ratio_after=fooling_ratio(new_clean, _predict(model, readv_test, device)),
            fooling_ratio_after_transfer=fooling_ratio(new_clean, new_adv_old),
            labeler_accuracy=labeler_accuracy)

    def _attack(self, attack, x: Tensor, y: Tensor, device: torch.device) -> Tensor:
        out = []
        for s in range(0, x.shape[0], self.attack_batch):
            out.append(attack(x[s:s + self.attack_batch].to(device), y[s:s + self.attack_batch].to(device)).cpu())
        return torch.cat(out) if out else x.clone()


def _num_outputs(model: nn.Module, x: Tensor, device: torch.device) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        width = model(x.to(device)).shape[1]
    model.train(was_training)
    return width


def _predict(model: nn.Module, x: Tensor, device: torch.device, batch: int = 1000) -> Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[s:s + batch].to(device)).argmax(1).cpu() for s in range(0, x.shape[0], batch)])
    model.train(was_training)
    return out


def _accuracy(pred: Tensor, y: Tensor) -> float:
    return (pred == y.cpu()).double().mean().item()


def _tensors(data: Data, name: str) -> Tuple[Tensor, Tensor]:
    tensors = getattr(data, "tensors", data)
    if not isinstance(tensors, (tuple, list)) or len(tensors) != 2 or not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{name} must be an (images, labels) pair of tensors or a dataset with .tensors")
    x, y = tensors
    if x.shape[0] != y.shape[0] or y.dtype != torch.int64:
        raise ValueError(f"{name}: labels must be int64 [N] matching the images, got {y.dtype} {list(y.shape)} "
                         f"for {x.shape[0]} images")
    return x.detach().cpu(), y.cpu()


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
