"""Retraining with labelled adversarial images, then re-attacking: the defense the retraining seed evaluates
(Thakur, Ding and Li, Sec. 3 and Fig. 1; the columns of its Tables 1 to 6).

1. Attack the classifier on ``n_adversarial`` training images and on the test images.
2. Label the adversarial training images with a true-label generator (:class:`KNNLabeler`), or with the
   labels of the images they were made from (``labels="source"``, the comparison the seed argues against).
   Images far from every training image ("fooling images") get a new class ``num_classes + j`` from the
   labeler (one, or one per fooling cluster).
3. Fine-tune a copy of the classifier (or train a fresh one) on the original plus the labelled adversarial
   training images. With ``fooling="new_class"`` (the seed's method) the copy's output layer first grows by
   the number of fooling classes (:func:`widen_output_layer`) and the fooling images are trained with their
   new labels; ``fooling="drop"`` leaves them out instead.
4. Measure accuracy on the original and the adversarial test images, and the fooling ratio of the attack
   rebuilt against the retrained classifier (white-box attacker) and of the old adversarial images
   (an attacker that cannot see the new model).

Evaluation rule with fooling classes: a retrained classifier that predicts a fooling class (``>= C``, the
original number of classes) for an adversarial image has *detected* it: the image is counted in
``detected_*``, it is **not** counted as fooled (fooled = prediction differs from the clean prediction *and*
is one of the C original classes), and it is **not** counted as correct in ``accuracy_adversarial`` (correct =
the true label). A fooling-class prediction on a clean test image is a wrong prediction.

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
from robustkit.defenses.output_layer import widen_output_layer
from robustkit.metrics import accuracy, fooled_not_detected, fooling_ratio, rate
from robustkit.nn import module_device
from robustkit.training.classifier import predict, train_classifier

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

    ``n_fooling``: adversarial training images labelled as fooling images; ``fooling_classes``: outputs added
    to the retrained classifier for them (0 with ``fooling="drop"`` or when there are none);
    ``n_fooling_dropped``: those left out of the retraining set (``fooling="drop"``). ``detected_after`` /
    ``detected_after_transfer``: share of the re-attacked / old adversarial test images the retrained
    classifier puts in a fooling class (not counted as fooled; see the module docstring).
    """

    n_adversarial: int
    labels: str
    fooling: str
    n_fooling: int
    fooling_classes: int
    n_fooling_dropped: int
    accuracy_original_before: float
    accuracy_adversarial_before: float
    fooling_ratio_before: float
    accuracy_original: float
    accuracy_adversarial: float
    fooling_ratio_after: float
    fooling_ratio_after_transfer: float
    detected_after: float
    detected_after_transfer: float
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
        epochs, lr, batch_size, optimizer: the retraining run (:func:`robustkit.training.train_classifier`).
        labels: ``"labeler"`` (the seed's method) or ``"source"`` (the images' own labels, for comparison).
        fooling: what to do with images the labeler puts in a fooling class (label ``>= C``):
            ``"new_class"`` (the seed's method) widens the classifier's final ``nn.Linear`` by the number of
            fooling classes and trains them with their labels; ``"drop"`` leaves them out of the retraining set.
        mode: ``"finetune"`` continues from a copy of ``model``; ``"retrain"`` trains ``model_factory()``
            from scratch.
        attack_batch: images per attack call. seed: the subset and the training order.

    A labeler that is not fitted yet is fitted here with ``num_classes`` = the model's number of outputs, so
    its fooling classes are numbered right after the model's classes.
    """

    def __init__(self, model: nn.Module, attack: AttackFactory, labeler: Optional[KNNLabeler] = None,
                 n_adversarial: int = 1000, epochs: int = 1, *, lr: float = 1e-3, batch_size: int = 128,
                 optimizer: str = "adam", labels: str = "labeler", fooling: str = "new_class",
                 mode: str = "finetune",
                 model_factory: Optional[Callable[[], nn.Module]] = None, attack_batch: int = 500,
                 seed: int = 0, progress: bool = False):
        if not callable(attack):
            raise TypeError("attack must be a factory model -> attack, e.g. lambda m: FGSM(m, eps=0.07)")
        if labels not in ("labeler", "source"):
            raise ValueError(f"labels must be 'labeler' or 'source', got {labels!r}")
        if fooling not in ("new_class", "drop"):
            raise ValueError(f"fooling must be 'new_class' or 'drop', got {fooling!r}")
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
        self.fooling = fooling
        self.attack_batch, self.seed, self.progress = attack_batch, seed, progress
        self.retrained_model: Optional[nn.Module] = None

    def run(self, train_data: Data, test_data: Data) -> RetrainingReport:
        """Runs steps 1-4 on ``(x, y)`` tensor pairs (or TensorDataset-likes); returns the report and keeps
        the retrained classifier in ``self.retrained_model``."""
        x_train, y_train = _tensors(train_data, "train_data")
        x_test, y_test = _tensors(test_data, "test_data")
        if self.n_adversarial > x_train.shape[0]:
            raise ValueError(f"n_adversarial ({self.n_adversarial}) exceeds the training set ({x_train.shape[0]})")
        device = module_device(self.model)
        generator = torch.Generator().manual_seed(self.seed)
        subset = torch.randperm(x_train.shape[0], generator=generator)[:self.n_adversarial]
        attack = self.attack(self.model)
        adv_train = self._attack(attack, x_train[subset], y_train[subset], device)
        adv_test = self._attack(attack, x_test, y_test, device)
        clean_pred, adv_pred = predict(self.model, x_test, device=device), predict(self.model, adv_test, device=device)

        num_outputs = count_outputs(self.model, x_test[:1], device)
        labeler_accuracy = float("nan")
        if self.labeler is not None:
            if not hasattr(self.labeler, "index_"):
                self.labeler.fit(x_train, y_train, num_classes=num_outputs)
            elif self.labeler.num_classes_ != num_outputs:
                raise ValueError(f"labeler was fitted with num_classes={self.labeler.num_classes_} but the model "
                                 f"has {num_outputs} outputs; its fooling classes would not follow the model's")
            labeler_labels = self.labeler.predict(adv_train).cpu()
            labeler_accuracy = (labeler_labels == y_train[subset]).double().mean().item()
        new_labels = labeler_labels if self.labels == "labeler" else y_train[subset]
        is_fooling = new_labels >= num_outputs
        n_fooling = int(is_fooling.sum())
        keep = ~is_fooling if self.fooling == "drop" else torch.ones_like(is_fooling)
        # one output per fooling class up to the highest one used (classes are numbered from num_outputs)
        fooling_classes = int(new_labels.max()) - num_outputs + 1 if self.fooling == "new_class" and n_fooling else 0
        retrain_set = TensorDataset(torch.cat([x_train, adv_train[keep]]), torch.cat([y_train, new_labels[keep]]))

        model = copy.deepcopy(self.model) if self.mode == "finetune" else self.model_factory()
        if fooling_classes:
            model = widen_output_layer(model, fooling_classes, num_classes=num_outputs,
                                       probe=x_test[:1].to(device), seed=self.seed)
        model = train_classifier(model, retrain_set, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                 seed=self.seed, device=device, optimizer=self.optimizer, progress=self.progress)
        self.retrained_model = model.eval()
        new_clean = predict(model, x_test, device=device)
        new_adv_old = predict(model, adv_test, device=device)
        new_adv = predict(model, self._attack(self.attack(model), x_test, y_test, device), device=device)
        return RetrainingReport(
            n_adversarial=self.n_adversarial, labels=self.labels, fooling=self.fooling, n_fooling=n_fooling,
            fooling_classes=fooling_classes, n_fooling_dropped=int((~keep).sum()),
            accuracy_original_before=accuracy(clean_pred, y_test),
            accuracy_adversarial_before=accuracy(adv_pred, y_test),
            fooling_ratio_before=fooling_ratio(clean_pred, adv_pred),
            accuracy_original=accuracy(new_clean, y_test), accuracy_adversarial=accuracy(new_adv_old, y_test),
            fooling_ratio_after=fooled_not_detected(new_clean, new_adv, num_outputs),
            fooling_ratio_after_transfer=fooled_not_detected(new_clean, new_adv_old, num_outputs),
            detected_after=rate(new_adv >= num_outputs), detected_after_transfer=rate(new_adv_old >= num_outputs),
            labeler_accuracy=labeler_accuracy)

    def _attack(self, attack, x: Tensor, y: Tensor, device: torch.device) -> Tensor:
        out = []
        for s in range(0, x.shape[0], self.attack_batch):
            out.append(attack(x[s:s + self.attack_batch].to(device), y[s:s + self.attack_batch].to(device)).cpu())
        return torch.cat(out) if out else x.clone()


def count_outputs(model: nn.Module, x: Tensor, device: torch.device) -> int:
    """The model's number of logits, from one eval-mode forward of ``x`` (its training flag is restored)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        width = model(x.to(device)).shape[1]
    model.train(was_training)
    return width


def _tensors(data: Data, name: str) -> Tuple[Tensor, Tensor]:
    tensors = getattr(data, "tensors", data)
    if not isinstance(tensors, (tuple, list)) or len(tensors) != 2 or not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{name} must be an (images, labels) pair of tensors or a dataset with .tensors")
    x, y = tensors
    if x.shape[0] != y.shape[0] or y.dtype != torch.int64:
        raise ValueError(f"{name}: labels must be int64 [N] matching the images, got {y.dtype} {list(y.shape)} "
                         f"for {x.shape[0]} images")
    return x.detach().cpu(), y.cpu()
