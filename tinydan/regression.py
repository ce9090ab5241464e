"""``python -m tinydan.regression``: the incremental sine-regression experiment.

The code lives in ``tinydan.experiments`` (``regression``, ``ablations``, ``baselines``); this
module is its command line and re-exports the experiment's public names.
"""
import sys

from .experiments import lookup

from .experiments.configs import REGRESSION_CONFIGS, RegressionConfig, regression_config  # noqa: F401
from .experiments.regression import *  # noqa: F401,F403
from .experiments.regression import __all__ as _names
from .experiments.regression_cli import build_parser, main  # noqa: F401

__all__ = list(_names) + ["main", "build_parser", "RegressionConfig", "REGRESSION_CONFIGS",
                          "regression_config"]


def __getattr__(name):
    """Every name of the experiment's modules, private ones included (for tests and lessons)."""
    try:
        return lookup(name, ['regression', 'regression_cli', 'configs', 'ablations', 'ablation_studies'])
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


if __name__ == "__main__":
    sys.exit(main())
