"""Raw microscope files -> the OME-Zarr plate store (``spheroid convert``).

:mod:`~pipeline.convert.plan` checks the inputs and decides the fields,
:mod:`~pipeline.convert.run` creates or resumes the store and runs one Dask task
per (field, time point), :mod:`~pipeline.convert.task` is what a task does.
"""
