"""Defenses: the PCA + k-NN true-label generator and retraining with labelled adversarial images."""
from robustkit.defenses.labeler import KNNLabeler
from robustkit.defenses.output_layer import find_output_layer, widen_output_layer
from robustkit.defenses.retrain import Retrainer, RetrainingReport
from robustkit.defenses.denoiser import DUNet, GuidedDenoiser
from robustkit.defenses.hgd import HGDObjective, train_denoiser
from robustkit.defenses.random_resize_pad import RandomResizePad
from robustkit.defenses.score_ensemble import ScoreEnsemble

__all__ = ["DUNet", "GuidedDenoiser", "KNNLabeler", "RandomResizePad", "Retrainer", "RetrainingReport", "ScoreEnsemble",
           "HGDObjective",
           "find_output_layer", "train_denoiser", "widen_output_layer"]
