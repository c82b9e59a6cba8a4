"""Training the 3D U-Net: losses, patch sampling, augmentation, validation and the loop.

:func:`pipeline.train.loop.train` is the entry point (``spheroid train``); it writes
models that :mod:`pipeline.segment.unet` loads.
"""
