"""Input and output: readers for microscope files, the OME-Zarr plate store, tables."""
