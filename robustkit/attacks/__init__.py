"""Attacks. Each takes ``model`` (or ``models=[...]``) and keyword hyperparameters; see ``base.Attack``."""
from robustkit.attacks.base import Attack, AttackResult
from robustkit.nn import Normalize
from robustkit.attacks.targets import least_likely, random_other

__all__ = ["Attack", "AttackResult", "Normalize", "least_likely", "random_other"]

from robustkit.attacks.fgsm import BIM, FGSM, IFGSM
from robustkit.attacks.mifgsm import DMIFGSM, MIFGSM
from robustkit.attacks.pgd import PGD

__all__ += ["FGSM", "IFGSM", "BIM", "PGD", "MIFGSM", "DMIFGSM"]

from robustkit.attacks.gap import GAP

__all__ += ["GAP"]

from robustkit.attacks.cw import CW
from robustkit.attacks.deepfool import DeepFool

__all__ += ["DeepFool", "CW"]
