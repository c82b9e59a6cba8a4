"""``spheroid run``: an experiment file in, every stage run, one report out.

:mod:`~pipeline.experiment.plan` checks the inputs against the plate layout and finds how
far each stage got; :mod:`~pipeline.experiment.run` runs what is left on one Dask client;
:mod:`~pipeline.experiment.costs` estimates time and storage for ``--dry-run``;
:mod:`~pipeline.experiment.truth` copies ground truth into the store and scores against it.
"""
