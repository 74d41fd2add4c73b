"""Kept so ``from robustkit.attacks.normalize import Normalize`` still works; the module is :mod:`robustkit.nn`."""
from robustkit.nn import Normalize

__all__ = ["Normalize"]
