"""Defenses: the PCA + k-NN true-label generator and retraining with labelled adversarial images."""
from robustkit.defenses.labeler import KNNLabeler
from robustkit.defenses.output_layer import find_output_layer, widen_output_layer
from robustkit.defenses.retrain import Retrainer, RetrainingReport
from robustkit.defenses.deep_defense import DeepDefense
from robustkit.defenses.denoiser import DUNet, GuidedDenoiser
from robustkit.defenses.hgd import HGDObjective, train_denoiser
from robustkit.defenses.random_resize_pad import RandomResizePad
from robustkit.defenses.score_ensemble import ScoreEnsemble
from robustkit.defenses.logit_pairing import LogitPairing
from robustkit.defenses.distillation import AtTemperature, Distillation, TemperatureCrossEntropy, defensive_distillation
from robustkit.defenses.parseval import Parseval, parseval_tightness

__all__ = ["DeepDefense", "DUNet", "GuidedDenoiser", "KNNLabeler", "RandomResizePad", "Retrainer", "RetrainingReport",
           "ScoreEnsemble",
           "HGDObjective",
           "find_output_layer", "train_denoiser", "widen_output_layer"]
__all__ += ["LogitPairing", "Distillation", "TemperatureCrossEntropy", "AtTemperature", "defensive_distillation",
            "Parseval", "parseval_tightness"]

from robustkit.defenses.adversarial_training import (TRADES, AdversarialTraining, FastAdversarialTraining,
                                                      FreeAdversarialTraining, adversarial_dataset)

__all__ += ["AdversarialTraining", "FastAdversarialTraining", "FreeAdversarialTraining", "TRADES",
            "adversarial_dataset"]
