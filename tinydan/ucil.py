"""``python -m tinydan.ucil``: the unsupervised class-incremental learning experiment.

The code lives in ``tinydan.experiments`` (``ucil``, ``ucil_data``, ``ucil_selection``,
``ucil_compare``); this module is its command line and re-exports the experiment's public names.
"""
import sys

from .experiments import lookup

from .experiments.configs import UCIL_CONFIGS, UCILConfig, build_ucil_net, initial_state, ucil_config  # noqa: F401
from .experiments.ucil import *  # noqa: F401,F403
from .experiments.ucil import Phenotype  # noqa: F401
from .experiments.ucil_cli import build_parser, main  # noqa: F401
from .experiments.ucil_compare import *  # noqa: F401,F403
from .experiments.ucil_data import *  # noqa: F401,F403
from .experiments.ucil_selection import *  # noqa: F401,F403


def __getattr__(name):
    """Every name of the experiment's modules, private ones included (for tests and lessons)."""
    try:
        return lookup(name, ['ucil', 'ucil_cli', 'ucil_compare', 'ucil_selection', 'ucil_data', 'configs', 'common'])
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


if __name__ == "__main__":
    sys.exit(main())
