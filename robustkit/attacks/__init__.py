"""Attacks. Each takes ``model`` (or ``models=[...]``, or a :class:`robustkit.nn.Ensemble`), its own keyword
hyperparameters and the shared :class:`AttackOptions`; see :mod:`robustkit.attacks.base` for the contract."""
from robustkit.attacks.base import (Attack, AttackOptions, AttackOutput, AttackResult, FixedBudgetAttack,
                                    MinimalNormAttack)
from robustkit.attacks.targets import least_likely, random_other
from robustkit.nn import Ensemble, Normalize

__all__ = ["Attack", "AttackOptions", "AttackOutput", "AttackResult", "FixedBudgetAttack", "MinimalNormAttack",
           "Ensemble", "Normalize", "least_likely", "random_other"]

from robustkit.attacks.gradient_base import GradientAttack
from robustkit.attacks.fgsm import FGSM
from robustkit.attacks.ifgsm import BIM, IFGSM
from robustkit.attacks.mifgsm import DMIFGSM, MIFGSM
from robustkit.attacks.pgd import PGD

__all__ += ["GradientAttack", "FGSM", "IFGSM", "BIM", "PGD", "MIFGSM", "DMIFGSM"]

from robustkit.attacks.gap import GAP

__all__ += ["GAP"]

from robustkit.attacks.cw import CW
from robustkit.attacks.deepfool import DeepFool

__all__ += ["DeepFool", "CW"]

from robustkit.attacks.apgd import APGD, APGDT
from robustkit.attacks.autoattack import AutoAttack
from robustkit.attacks.bpda import BPDA
from robustkit.attacks.fab import FAB
from robustkit.attacks.square import Square

__all__ += ["APGD", "APGDT", "Square", "FAB", "AutoAttack", "BPDA"]
