"""The metrics of :mod:`robustkit.metrics`, under the evaluation package where the runner's users look for them."""
from robustkit.metrics import *  # noqa: F401,F403
from robustkit.metrics import __all__  # noqa: F401
