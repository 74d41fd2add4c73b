"""Defenses: the PCA + k-NN true-label generator and retraining with labelled adversarial images."""
from robustkit.defenses.labeler import KNNLabeler
from robustkit.defenses.output_layer import find_output_layer, widen_output_layer
from robustkit.defenses.retrain import Retrainer, RetrainingReport

__all__ = ["KNNLabeler", "Retrainer", "RetrainingReport", "find_output_layer", "widen_output_layer"]
