"""The GeneSegNet network and everything around it: targets, loss, training, tiled inference, decoding.

These functions work on plain arrays; :func:`gsn.tl.train` and :func:`gsn.tl.segment` are the
SpatialData-facing entry points.
"""

from ._decode import clean_labels, decode_instances, find_centers
from ._growth import GrowthReport, grow_labels
from ._inference import PredictedMaps, predict_maps, predict_window, tile_starts
from ._loss import LossTerms, genesegnet_loss
from ._model import GeneSegNetModel, ModelConfig, as_model, load, resolve_device
from ._recursive import check_training_labels, label_agreement, recursive_train, update_labels
from ._runner import TileRunner
from ._targets import Targets, cell_centers, make_targets, make_targets_batch
from ._training import Augmentation, TrainingSample, random_crop, train_network
from ._unet import DEFAULT_WIDTHS, SLIM_WIDTHS, GeneSegUNet, UNetOutput, count_parameters, flops_per_pixel

__all__ = [
    "DEFAULT_WIDTHS",
    "SLIM_WIDTHS",
    "Augmentation",
    "GeneSegNetModel",
    "GeneSegUNet",
    "GrowthReport",
    "LossTerms",
    "ModelConfig",
    "PredictedMaps",
    "Targets",
    "TileRunner",
    "TrainingSample",
    "UNetOutput",
    "as_model",
    "cell_centers",
    "check_training_labels",
    "clean_labels",
    "count_parameters",
    "decode_instances",
    "find_centers",
    "flops_per_pixel",
    "genesegnet_loss",
    "grow_labels",
    "label_agreement",
    "load",
    "make_targets",
    "make_targets_batch",
    "predict_maps",
    "predict_window",
    "random_crop",
    "recursive_train",
    "resolve_device",
    "tile_starts",
    "train_network",
    "update_labels",
]
