"""Attacks. Each takes ``model`` (or ``models=[...]``) and keyword hyperparameters; see ``base.Attack``."""
from robustkit.attacks.base import Attack, AttackResult
from robustkit.attacks.normalize import Normalize
from robustkit.attacks.targets import least_likely, random_other

__all__ = ["Attack", "AttackResult", "Normalize", "least_likely", "random_other"]
