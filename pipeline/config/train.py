"""Configuration of the 3D U-Net training job (``spheroid train``) and of the network itself."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.config.base import StrictModel

LossName = Literal["ce", "wce", "focal", "iou", "dice"]


class UNetConfig(StrictModel):
    """The architecture of :class:`pipeline.segment.unet.network.UNet3D` (all its keyword arguments)."""

    in_channels: int = Field(1, ge=1)
    """Input channels (1: one stain such as Hoechst)."""
    n_classes: int = Field(3, ge=2)
    """Output classes; the pipeline uses 3: background, edge, nucleus."""
    features: list[int] = Field(default_factory=lambda: [64, 128, 256], min_length=1)
    """Channels of the double-conv block at each level, shallowest first; the last level is the
    bottleneck, so ``len(features) - 1`` poolings (thesis default [64, 128, 256])."""
    pool: list[list[int]] | None = None
    """Pooling factor ``(z, y, x)`` for each of the ``len(features) - 1`` down-steps; ``null`` gives
    ``(1, 2, 2)`` at the first step (keep z: 5 um z vs 1.24 um xy) and ``(2, 2, 2)`` after it."""
    upsampling: Literal["transpose", "trilinear"] = "transpose"
    """Decoder up-sampling: learnt transposed convolution or trilinear interpolation + 1x1x1 conv."""
    norm: Literal["batch", "instance", "group"] | None = None
    """Normalisation after each convolution (``null``: none, as in the thesis)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout probability after each double-conv block (0: off)."""
    centre: bool = False
    """Also predict each nucleus' centre map (one more output, with a sigmoid): inside every
    nucleus a Gaussian peaked at 1 on its centroid (sigma 0.15 of its extent per axis), 0 outside
    (:func:`pipeline.train.data.centre_target`). Instances then grow from one seed per centre,
    which separates touching nuclei whose shared boundary the image does not show."""

    @model_validator(mode="after")
    def _pool_levels(self) -> "UNetConfig":
        if self.pool is not None:
            if len(self.pool) != len(self.features) - 1:
                raise ValueError(f"pool needs {len(self.features) - 1} entries (one per down-step), got {len(self.pool)}")
            for factor in self.pool:
                if len(factor) != 3 or any(f < 1 for f in factor):
                    raise ValueError(f"each pool entry must be three positive integers (z, y, x), got {factor}")
        return self


class LossTerm(StrictModel):
    """One term of the training loss; the loss is the weighted sum of all terms."""

    name: LossName
    """``ce`` cross-entropy, ``wce`` class-weighted cross-entropy, ``focal`` focal loss (alpha, gamma),
    ``iou`` soft IoU loss (class-weighted, thesis Eq. 8), ``dice`` soft Dice loss (class-weighted)."""
    weight: float = Field(1.0, gt=0)
    """Factor of this term in the sum."""
    class_weights: list[float] | None = None
    """Per-class weights (background, edge, nucleus) for wce, focal, iou and dice; equal when unset.
    Thesis best: [1.0, 2.0, 1.5] with the IoU loss."""
    alpha: float = Field(1.0, gt=0)
    """Focal loss: overall factor alpha (thesis Eq. 7)."""
    gamma: float = Field(2.0, ge=0)
    """Focal loss: focusing exponent gamma (thesis tried 5-8; 0 gives cross-entropy)."""
    eps: float = Field(1.0, gt=0)
    """IoU / Dice: smoothing added to numerator and denominator."""

    @model_validator(mode="after")
    def _weights_need_name(self) -> "LossTerm":
        if self.name == "wce" and self.class_weights is None:
            raise ValueError("loss 'wce' needs class_weights, e.g. [1.0, 3.0, 2.0]")
        if self.class_weights is not None and any(w < 0 for w in self.class_weights):
            raise ValueError(f"class_weights must be >= 0, got {self.class_weights}")
        return self


class SamplingConfig(StrictModel):
    """How training patches are drawn from the training volumes."""

    patch_size: list[int] = Field(default_factory=lambda: [16, 128, 128], min_length=3, max_length=3)
    """Patch shape (z, y, x) in voxels; each must be divisible by the network's total pooling."""
    batch_size: int = Field(2, ge=1)
    """Patches per optimisation step."""
    foreground_fraction: float = Field(0.67, ge=0.0, le=1.0)
    """Share of patches centred on a random nucleus or edge voxel (the rest are placed uniformly):
    over-sampling of the rare classes."""
    edge_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """Of the foreground-centred patches, the share centred on an edge voxel rather than a nucleus voxel."""


class AugmentConfig(StrictModel):
    """Random augmentation applied to each training patch."""

    flip: bool = True
    """Random flips along z, y and x."""
    rotate90: bool = True
    """Random 90-degree rotations in the y-x plane (square patches only)."""
    intensity_scale: list[float] = Field(default_factory=lambda: [0.8, 1.2], min_length=2, max_length=2)
    """Range of a random multiplicative intensity factor ([1, 1]: off)."""
    intensity_shift: list[float] = Field(default_factory=lambda: [-0.1, 0.1], min_length=2, max_length=2)
    """Range of a random additive offset, in normalised units ([0, 0]: off)."""
    noise_std: float = Field(0.05, ge=0.0)
    """Maximum standard deviation of added Gaussian noise (drawn uniformly in [0, noise_std])."""
    gamma: list[float] = Field(default_factory=lambda: [1.0, 1.0], min_length=2, max_length=2)
    """Range of a random gamma applied to the patch rescaled to [0, 1] ([1, 1]: off): uneven,
    non-linear staining."""
    blur_sigma: list[float] = Field(default_factory=lambda: [0.0, 0.0], min_length=2, max_length=2)
    """Range of the sigma (y-x voxels) of a random Gaussian blur, applied to half the patches
    ([0, 0]: off): other optics than the training data's."""


class NormalizationConfig(StrictModel):
    """Percentile normalisation of every image (recorded in the model card: the model's input contract)."""

    low: float = Field(1.0, ge=0, lt=100)
    """Percentile mapped to 0."""
    high: float = Field(99.8, gt=0, le=100)
    """Percentile mapped to 1."""
    clip: bool = False
    """Clip the normalised values to [0, 1]."""

    @model_validator(mode="after")
    def _ordered(self) -> "NormalizationConfig":
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class OptimConfig(StrictModel):
    """Adam and the learning-rate schedule."""

    lr: float = Field(1e-4, gt=0)
    """Initial learning rate (thesis best with the IoU loss: 1e-4)."""
    weight_decay: float = Field(0.0, ge=0)
    """Adam weight decay."""
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    """Learning-rate schedule over ``max_steps``: constant, cosine decay to ``min_lr``, or step decay."""
    min_lr: float = Field(1e-6, ge=0)
    """Final learning rate of the cosine schedule."""
    step_every: int = Field(1000, ge=1)
    """Step schedule: multiply the rate by ``step_gamma`` every this many steps."""
    step_gamma: float = Field(0.5, gt=0, le=1)
    """Step schedule: the factor."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up from 0 over this many steps."""
    grad_clip: float | None = Field(None, gt=0)
    """Clip the gradient norm to this value (``null``: no clipping)."""


class LabelingConfig(StrictModel):
    """Instance labelling of the predicted probabilities (:func:`pipeline.segment.instances.label_nuclei`)."""

    seed_threshold: float = Field(0.5, gt=0, lt=1)
    """Seeds: voxels with p(nucleus) above this and nucleus as the most likely class."""
    foreground_threshold: float = Field(0.5, gt=0, lt=1)
    """Foreground (where instances may grow): p(edge) + p(nucleus) above this."""
    erode_xy: int = Field(1, ge=0)
    """Erode the seed mask this many times in y-x before finding seeds (splits thin bridges)."""
    min_seed_size: int = Field(4, ge=1)
    """Seeds smaller than this many voxels are dropped."""
    min_size: int = Field(20, ge=0)
    """Instances smaller than this many voxels are removed."""
    elevation: Literal["probability", "distance"] = "probability"
    """Watershed landscape: ``-p(nucleus)`` or the negative distance to the background."""
    seed_centre: float = Field(0.5, gt=0, lt=1)
    """Models with the centre output: seeds are the connected regions where the predicted centre
    map exceeds this (one per nucleus); the watershed then runs on the centre map.
    ``seed_threshold``, ``erode_xy``, ``elevation`` and ``min_seed_size`` are not used then."""
    seeds: Literal["interior", "maxima"] = "interior"
    """Seeds: connected components of the confident interior (``interior``), or the local maxima of
    p(nucleus) above ``seed_threshold`` (``maxima``: one seed per nucleus also where two nuclei
    merge into one blob of nucleus class, e.g. stacked in z under the axial blur)."""
    seed_footprint: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [3, 5, 5], min_length=3, max_length=3)
    """``maxima``: neighbourhood (z, y, x voxels of the model's grid) a seed is the maximum of;
    about half a nucleus."""
    seed_smooth: list[Annotated[float, Field(ge=0)]] = Field(default_factory=lambda: [0.0, 0.8, 0.8], min_length=3, max_length=3)
    """``maxima``: Gaussian sigma (z, y, x voxels of the model's grid) applied to p(nucleus) first."""
    z_trim: float = Field(0.0, ge=0, lt=1)
    """Cut each instance's first and last slices whose area is below this fraction of its largest
    slice: the axial blur makes the foreground reach a slice or two above and below a nucleus
    (true nuclei at 5 um span mostly 2 slices, predicted masks 3-4). 0: off."""
    min_peak: float = Field(0.0, ge=0, lt=1)
    """Drop instances whose highest p(nucleus) stays below this: regions the model is unsure of
    as a whole (out-of-focus haze, faint debris), which a seed at a low local maximum would
    otherwise turn into a nucleus. 0: off."""
    include_edge: bool | None = None
    """Instances keep the edge voxels they grow into (true: the ground truth's ``inner`` edges, which
    lie inside each instance) or are cut back to the nucleus class (false: the thesis' ``outer``
    edges). ``null``: decided from the training data (where its edge voxels lie)."""


class ValidationConfig(StrictModel):
    """Validation on whole volumes of the ``val`` split."""

    every: int = Field(200, ge=1)
    """Validate every this many steps (and after the last step)."""
    tile: list[int] | None = None
    """Sliding-window tile (z, y, x) for validation; the patch size when unset."""
    overlap: float = Field(0.25, ge=0, lt=1)
    """Tile overlap as a fraction of the tile."""
    metric: str = "f1_nucleus"
    """Metric that selects the best checkpoint: ``loss``, ``f1_<class>``, ``iou_<class>``,
    ``precision_<class>``, ``recall_<class>``, ``mean_f1`` or ``match_f1`` (instance F1 at IoU 0.5)."""
    patience: int | None = Field(None, ge=1)
    """Early stopping: stop after this many validations without improvement (``null``: never)."""
    match_threshold: float = Field(0.5, gt=0, lt=1)
    """IoU threshold of the instance matching metrics."""
    max_volumes: int | None = Field(None, ge=1)
    """Validate on at most this many val volumes (all when unset)."""
    tune_labeling: bool = True
    """After training, choose the labelling thresholds (seed, foreground) with the best instance
    F1 on the val volumes and store them in the model card."""

    @model_validator(mode="after")
    def _known_metric(self) -> "ValidationConfig":
        names = {"loss", "mean_f1"}
        names |= {f"{k}_{c}" for k in ("precision", "recall", "f1", "iou") for c in ("background", "edge", "nucleus")}
        names |= {f"match_{k}" for k in ("f1", "precision", "recall", "accuracy", "panoptic_quality")}
        if self.metric not in names:
            raise ValueError(f"unknown metric {self.metric!r}; one of {', '.join(sorted(names))}")
        return self


class StarDistTrainConfig(StrictModel):
    """StarDist 3D (``backend: stardist``): the network and its training (see StarDist's ``Config3D``)."""

    n_rays: int = Field(32, ge=8)
    """Rays per star-convex polyhedron (laid out on a golden spiral, stretched by the anisotropy)."""
    grid: list[int] = Field(default_factory=lambda: [1, 2, 2], min_length=3, max_length=3)
    """Subsampling of the prediction grid (z, y, x), powers of 2: (1, 2, 2) keeps the few z-slices."""
    anisotropy: list[float] | None = Field(None, min_length=3, max_length=3)
    """Object anisotropy (z, y, x); ``null``: from the median nucleus extents of the training labels."""
    unet_n_depth: int = Field(2, ge=1)
    """Levels of StarDist's U-Net backbone."""
    unet_n_filter_base: int = Field(16, ge=4)
    """Filters of its first level (StarDist's default 32; 16 suits a CPU)."""
    patch_size: list[int] = Field(default_factory=lambda: [16, 64, 64], min_length=3, max_length=3)
    """Training patch (z, y, x); divisible by ``grid`` times 2 per backbone level."""
    batch_size: int = Field(2, ge=1)
    """Patches per step."""
    lr: float = Field(3e-4, gt=0)
    """Adam learning rate (StarDist's default)."""
    steps_per_epoch: int = Field(50, ge=1)
    """Steps between validations (Keras epochs); ``max_steps`` in total."""
    nms_thresholds: list[float] = Field(default_factory=lambda: [0.3, 0.4, 0.5], min_length=1)
    """NMS thresholds tried when the probability threshold is optimised on the val split."""
    threshold_iterations: int = Field(20, ge=1)
    """Iterations of StarDist's search for the probability threshold (per NMS threshold)."""


class CellposeTrainConfig(StrictModel):
    """Cellpose (``backend: cellpose``): a fresh CPnet trained on 2D slices of the training volumes.

    The volumes are resampled to isotropic voxels for the z-x and z-y slices (Cellpose 3D
    runs the one 2D network on all three views and combines their flows).
    """

    batch_size: int = Field(8, ge=1)
    """2D patches per step."""
    bsize: int = Field(96, ge=32)
    """Patch size (pixels; a multiple of 16); also the tile at inference."""
    lr: float = Field(0.005, gt=0)
    """AdamW learning rate (Cellpose's default, 0.005)."""
    weight_decay: float = Field(1e-5, ge=0)
    """AdamW weight decay."""
    steps_per_epoch: int = Field(10, ge=1)
    """Steps per Cellpose epoch (epochs = max_steps / steps_per_epoch)."""
    ortho_slices: bool = True
    """Also train on z-x and z-y slices (at isotropic scale), the views ``do_3D`` uses."""
    min_masks: int = Field(1, ge=0)
    """Slices with fewer nuclei are not used."""
    cellprob_thresholds: list[float] = Field(default_factory=lambda: [-1.0, 0.0, 1.0], min_length=1)
    """Cell-probability thresholds tried on the val split; the best goes into the card."""
    min_size: int = Field(15, ge=0)
    """Masks smaller than this many voxels are removed at inference."""


class TrainConfig(StrictModel):
    """The ``spheroid train`` job: data, network, loss, sampling, optimisation, validation, output."""

    backend: Literal["unet", "stardist", "cellpose"] = "unet"
    """Which model to train: ``unet`` (ours; the sections model, loss, sampling, augment, optim,
    labeling apply), ``stardist`` (section ``stardist``) or ``cellpose`` (section ``cellpose``).
    All three read the same training set and split and write a model folder with a model card."""
    init_from: str | None = None
    """Fine-tune: start from the weights of this model folder (same backend; for the U-Net, its
    architecture and normalisation are taken from its card). The card records where it came from."""
    trainset: str | None = None
    """Training-set folder (``manifest.json`` + images / instances / semantic); ``--trainset`` overrides."""
    out: str = "runs/unet"
    """Output folder: checkpoints, metrics.csv, learning_curve.png and the model in ``model/``."""
    name: str = "unet"
    """Name written into the model card."""
    channel: str | None = None
    """Use only training items of this channel (``null``: all items)."""
    voxel_size: list[float] | None = Field(None, min_length=3, max_length=3)
    """Voxel size (z, y, x um) the model expects; ``null``: taken from the training set (all items must agree)."""
    voxel_tolerance: float = Field(0.1, ge=0)
    """Relative voxel-size difference per axis within which an item (and later, data to segment)
    is used as it is; beyond it, it is resampled to ``voxel_size``."""
    resample: bool = True
    """Resample training items whose voxel size differs from ``voxel_size`` (image linear, labels
    nearest, target rebuilt); ``false`` refuses them as before."""
    model: UNetConfig = Field(default_factory=UNetConfig)
    """The network."""
    loss: list[LossTerm] = Field(
        default_factory=lambda: [LossTerm(name="iou", class_weights=[1.0, 2.0, 1.5])], min_length=1
    )
    """Loss terms, summed with their weights (thesis best: the IoU loss with weights [1.0, 2.0, 1.5])."""
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    """Patch sampling."""
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    """Augmentation."""
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    """Input normalisation."""
    optim: OptimConfig = Field(default_factory=OptimConfig)
    """Optimiser and schedule."""
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    """Instance labelling used in validation and stored in the model card for inference."""
    centre_weight: float = Field(1.0, ge=0)
    """Weight of the centre output's loss (cross-entropy of the predicted against the true centre
    map, peaks weighted up: :func:`pipeline.train.losses.centre_loss`), when ``model.centre`` is set."""
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    """Validation, best checkpoint and early stopping."""
    max_steps: int = Field(5000, ge=1)
    """Optimisation steps in total (a resumed run continues up to this number)."""
    log_every: int = Field(10, ge=1)
    """Record the mean training loss every this many steps."""
    checkpoint_every: int = Field(100, ge=1)
    """Write the resumable checkpoint every this many steps."""
    seed: int = 0
    """Seed of python, numpy and torch random numbers."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when available, else CPU."""
    amp: bool = True
    """Mixed precision (float16 autocast + gradient scaling) on CUDA; ignored on CPU."""
    deterministic: bool = True
    """On CUDA: deterministic cuDNN/cuBLAS kernels, so a resumed run follows an uninterrupted one
    (within float tolerance: a few kernels, e.g. trilinear up-sampling's backward, have no
    deterministic form); ``false`` lets cuDNN autotune for speed. CPU training is deterministic."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (``null``: torch's default)."""
    tensorboard: bool = False
    """Also log to TensorBoard (needs the ``[tensorboard]`` extra)."""
    stardist: StarDistTrainConfig = Field(default_factory=StarDistTrainConfig)
    """StarDist settings (``backend: stardist``)."""
    cellpose: CellposeTrainConfig = Field(default_factory=CellposeTrainConfig)
    """Cellpose settings (``backend: cellpose``)."""
    command: str | None = None
    """The command that reproduces this model, written into the model card (filled by the CLI when unset)."""
