"""Defensive distillation (Papernot, McDaniel, Wu, Jha and Swami 2016), the procedure of the AML-report seed's
Fig. 2: train a teacher with its softmax at temperature T, label the training set with the teacher's
``softmax(z/T)``, train a student of the same architecture on those soft labels with its softmax at the same T,
and deploy the student at T = 1 (its raw logits).

Training at T only divides the logits inside the loss, so the trained network's own logits are what is
deployed: they come out about T times larger than at training, the softmax at T = 1 saturates, and the
cross-entropy gradient an attacker sees vanishes. That is gradient masking, not robustness: attacks on the
margin (C&W) or on ``z / T`` are not fooled (see docs/defenses.md).
"""
from __future__ import annotations

import math
import os
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from robustkit.ops import ensemble_temperature_ce
from robustkit.training.objective import ObjectiveOutput, check_images


def check_temperature(owner: str, temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{owner}: temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def soft_cross_entropy(logits: Tensor, soft_targets: Tensor, temperature: float = 1.0) -> Tensor:
    """``mean_i −Σ_c p_ic log softmax(z_i / T)_c``: the cross-entropy of the softmax at temperature T against
    probability targets ``p`` (``[B, C]``, rows summing to 1).

    PyTorch's log-softmax rather than :func:`robustkit.ops.ensemble_temperature_ce`: that fused op takes class
    indices only, and a soft target would need C calls of it weighted by ``p``.
    """
    if soft_targets.shape != logits.shape:
        raise ValueError(f"soft_cross_entropy: soft_targets must have the logits' shape {list(logits.shape)}, "
                         f"got {list(soft_targets.shape)}")
    log_prob = torch.log_softmax(logits / temperature, dim=1)
    return -(soft_targets * log_prob).sum(dim=1).mean()


class TemperatureCrossEntropy:
    """The teacher's objective: ``CE(softmax(z / T), y)`` on the clean images, through the fused op."""

    def __init__(self, temperature: float):
        self.temperature = check_temperature("TemperatureCrossEntropy", temperature)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        logits = model(x)
        loss = ensemble_temperature_ce(logits.unsqueeze(0), y, temperature=self.temperature)
        return ObjectiveOutput(loss=loss, logits=logits, metrics={})

    def __repr__(self) -> str:
        return f"TemperatureCrossEntropy(temperature={self.temperature:g})"


class Distillation:
    """Trains a student on a teacher's ``softmax(z_teacher / T)`` with the student's softmax at the same T.

    The teacher is run in eval mode without gradients on each batch; for a frozen teacher this gives each
    image the same soft label as labelling the training set once beforehand (the seed's step 3), and it also
    labels augmented images correctly. The teacher's class count must equal the student's (checked on the
    first batch).

    Args:
        teacher: the trained teacher network (logits out).
        temperature: T > 0 (Papernot et al. use 1 to 100).
        hard_weight: optional weight of the student's ordinary cross-entropy on the true labels at T, added to
            the soft one (Hinton et al.'s variant; defensive distillation uses 0).

    ``metrics``: ``soft_ce`` and ``agreement`` (fraction of the batch where student and teacher agree).

    Example::

        >>> teacher = train_at_temperature(...)                      # or defensive_distillation(...)
        >>> objective = Distillation(teacher, temperature=100)
        >>> out = objective(student, x, y); out.loss.backward()
    """

    def __init__(self, teacher: nn.Module, *, temperature: float, hard_weight: float = 0.0):
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"Distillation: teacher must be an nn.Module, got {type(teacher).__name__}")
        self.teacher = teacher
        self.temperature = check_temperature("Distillation", temperature)
        if isinstance(hard_weight, bool) or not isinstance(hard_weight, (int, float)) or \
                not (math.isfinite(hard_weight) and hard_weight >= 0):
            raise ValueError(f"Distillation: hard_weight must be a finite number >= 0, got {hard_weight!r}")
        self.hard_weight = float(hard_weight)

    @torch.no_grad()
    def soft_labels(self, x: Tensor) -> Tensor:
        """``softmax(z_teacher(x) / T)``, the teacher in eval mode (its modes are restored afterwards)."""
        modes = [(m, m.training) for m in self.teacher.modules()]
        self.teacher.eval()
        try:
            logits = self.teacher(x)
        finally:
            for m, training in modes:
                m.training = training
        if logits.dtype != torch.float64:  # half-precision teachers: soft labels in float32
            logits = logits.float()
        return torch.softmax(logits / self.temperature, dim=1)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> ObjectiveOutput:
        check_images("Distillation", x)
        targets = self.soft_labels(x)
        logits = model(x)
        if targets.shape[1] != logits.shape[1]:
            raise ValueError(f"Distillation: teacher gives {targets.shape[1]} classes but the student gives "
                             f"{logits.shape[1]}; the teacher must have the student's class count")
        loss = soft_cross_entropy(logits, targets.to(logits.dtype), self.temperature)
        metrics = {"soft_ce": loss.detach()}
        if self.hard_weight > 0:
            loss = loss + self.hard_weight * ensemble_temperature_ce(logits.unsqueeze(0), y,
                                                                     temperature=self.temperature)
        metrics["agreement"] = (logits.detach().argmax(1) == targets.argmax(1)).float().mean()
        return ObjectiveOutput(loss=loss, logits=logits, metrics=metrics)

    def __repr__(self) -> str:
        return f"Distillation(teacher={type(self.teacher).__name__}, temperature={self.temperature:g})"


class AtTemperature(nn.Module):
    """``model``'s logits divided by T: the network as it was trained, where the deployed network is ``model``
    itself (T = 1). Attacking this module is the "PGD on z / T" that removes distillation's gradient masking."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.temperature = check_temperature("AtTemperature", temperature)
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) / self.temperature


def defensive_distillation(make_model: Callable[[], nn.Module], train_data, temperature: float, epochs: int, *,
                           teacher_epochs: Optional[int] = None, teacher: Optional[nn.Module] = None,
                           return_teacher: bool = False, **fit_kwargs):
    """The whole procedure of Papernot et al. (the seed's Fig. 2); returns the student deployed at T = 1.

    Args:
        make_model: builds a fresh network (called for the teacher and for the student: same architecture).
        train_data: the training set, as :func:`robustkit.training.fit` takes it.
        temperature: the distillation temperature T > 0.
        epochs: student epochs; ``teacher_epochs`` defaults to the same.
        teacher: an already trained teacher (trained at ``temperature``) to skip step 2.
        return_teacher: return ``(student, teacher)`` instead of the student alone.
        **fit_kwargs: passed to both :func:`robustkit.training.fit` calls (``lr``, ``batch_size``, ``seed``,
            ``optimizer``, ``device``, ...); a ``checkpoint_dir`` gets ``teacher/`` and ``student/`` inside.

    Example::

        >>> student = defensive_distillation(lambda: rk.models.LeNet(), mnist_train, temperature=100, epochs=2)
        >>> student(x).argmax(1)                # deployed at T = 1: plain logits
    """
    from robustkit.training import fit  # the training loop; imported here so the objectives work without it

    temperature = check_temperature("defensive_distillation", temperature)
    if isinstance(make_model, nn.Module) or not callable(make_model):  # a module is callable, but not a factory
        raise TypeError(f"defensive_distillation: make_model must be a callable returning an nn.Module, "
                        f"got {type(make_model).__name__}")
    for name, value in (("epochs", epochs), ("teacher_epochs", teacher_epochs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"defensive_distillation: {name} must be an int >= 1, got {value!r}")
    checkpoint_dir = fit_kwargs.pop("checkpoint_dir", None)

    def stage_kwargs(stage: str) -> dict:
        # two runs, two checkpoint folders: fit refuses a folder that holds another run's checkpoint
        return dict(fit_kwargs, checkpoint_dir=None if checkpoint_dir is None else os.path.join(checkpoint_dir, stage))

    if teacher is None:
        teacher = make_model()
        fit(teacher, train_data, objective=TemperatureCrossEntropy(temperature),
            epochs=teacher_epochs or epochs, **stage_kwargs("teacher"))
    teacher.eval()
    student = make_model()
    fit(student, train_data, objective=Distillation(teacher, temperature=temperature), epochs=epochs,
        **stage_kwargs("student"))
    student.eval()
    return (student, teacher) if return_teacher else student


__all__ = ["AtTemperature", "Distillation", "TemperatureCrossEntropy", "defensive_distillation",
           "soft_cross_entropy"]
