"""The paper's two experiments, on one shared core.

``configs`` (the configs and networks of both), ``common`` (the phenotype, meta-training with
checkpoint and resume, deployment into R, results files), ``cli`` (the command lines' pieces);
incremental sine regression: ``regression``, ``ablations`` / ``ablation_studies`` (Figure 4) and
``baselines``; unsupervised class-incremental learning: ``ucil``, ``ucil_data``,
``ucil_selection`` (how phi_0, rates and epochs are chosen) and ``ucil_compare``.
"""


def lookup(name: str, modules) -> object:
    """The attribute ``name`` of the first of ``tinydan.experiments.<module>`` that has it (the
    front-door modules tinydan.regression and tinydan.ucil forward every name this way)."""
    import importlib
    for module in modules:
        m = importlib.import_module(f"tinydan.experiments.{module}")
        if hasattr(m, name):
            return getattr(m, name)
    raise AttributeError(name)
