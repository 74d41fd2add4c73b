"""Training: the objective contract, the training loop, and plain supervised training of a classifier."""
from robustkit.training.classifier import evaluate_accuracy, predict, predict_labels, train_classifier
from robustkit.training.fit import History, fit
from robustkit.training.objective import CrossEntropy, Objective, ObjectiveOutput, objective_passes, unwrap_model

__all__ = ["ObjectiveOutput", "Objective", "CrossEntropy", "objective_passes", "unwrap_model",
           "fit", "History",
           "train_classifier", "predict", "predict_labels", "evaluate_accuracy"]
