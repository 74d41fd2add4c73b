"""Training: the objective contract and the training loop."""
from robustkit.training.objective import CrossEntropy, Objective, ObjectiveOutput, objective_passes, unwrap_model

__all__ = ["ObjectiveOutput", "Objective", "CrossEntropy", "objective_passes", "unwrap_model"]
