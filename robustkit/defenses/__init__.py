"""Defenses: the PCA + k-NN true-label generator and retraining with labelled adversarial images."""
from robustkit.defenses.labeler import KNNLabeler

__all__ = ["KNNLabeler"]
