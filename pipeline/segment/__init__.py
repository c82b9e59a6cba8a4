"""Segmentation: the 3D U-Net (network, sliding-window inference, model card), instance labelling
and the segmentation backends."""
