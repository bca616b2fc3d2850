"""The trained model object: network weights plus everything needed to use them again."""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._logging import logger
from ._unet import DEFAULT_OFFSET_SCALE, DEFAULT_WIDTHS, GeneSegUNet

FORMAT_NAME = "gsn.GeneSegNetModel"
FORMAT_VERSION = 1
RNA_CHANNEL = "rna"
"""Name of the RNA location map channel, always the last network input."""


def _gsn_version() -> str:
    try:
        from .. import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - partial installs
        return "unknown"


def _available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cuda"]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` (or ``None``) into CUDA, then Apple MPS, then CPU; check that any other device exists.

    Raises
    ------
    ValueError
        If the device is not a torch device name, or names a CUDA/MPS device this machine does not
        have; the message lists the devices that are available.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        from .._settings import settings

        device = settings.device
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = _available_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"`device={device!r}` is not a torch device; available here: {available} or 'auto'.") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(
                f"`device={device!r}`: CUDA is not available ({why}); available devices: {available}. "
                "Use device='auto' or 'cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"`device={device!r}`: there are {torch.cuda.device_count()} CUDA devices; available: {available}."
            )
    elif dev.type == "mps" and "mps" not in available:
        raise ValueError(f"`device={device!r}`: Apple MPS is not available; available devices: {available}.")
    return dev


@dataclass
class ModelConfig:
    """Everything besides the weights that is needed to rebuild and apply a model.

    Attributes
    ----------
    channels
        Names of the image channels the network reads, in order (e.g. ``["DAPI"]``); the RNA
        location map is appended as the last input channel.
    widths
        Channel widths of the U-Net scales.
    offset_scale
        Pixels per unit of the raw offset head.
    sigma
        Width (pixels, at ``pixel_size``) of the RNA location map Gaussians (Eq. 5).
    rna_mode
        ``"sum"`` (Eq. 5) or ``"max"`` RNA map.
    rna_scale
        Divisor of the summed Gaussians before clipping (``1``: Eq. 5 exactly; ``"auto"``: the
        image's 99th percentile, for dense data); see :func:`gsn.pp.rna_location_map_array`.
    center_sigma
        Width (pixels) of the centre target peaks the model was trained on.
    norm_low, norm_high
        Percentiles of the whole-image intensity normalisation of the image channels.
    pixel_size
        Microns per pixel of the training images, or ``None`` if unknown. Images of another known
        pixel size are rescaled to it before inference.
    gsn_version
        Version of gsn that created the model.
    history
        One dict per training epoch (losses, learning rate, seconds).
    train_params
        The training arguments, for provenance.
    rounds
        One dict per round of recursive label refinement (:func:`gsn.tl.train` with
        ``max_rounds > 1``): ``round``, ``loss``, ``mean_iou``, ``n_cells``, ``mean_area``, ``seconds``
        and more; empty for a single round.
    """

    channels: list[str] = field(default_factory=lambda: ["DAPI"])
    widths: list[int] = field(default_factory=lambda: list(DEFAULT_WIDTHS))
    offset_scale: float = DEFAULT_OFFSET_SCALE
    sigma: float = 7.0
    rna_mode: str = "sum"
    rna_scale: float | str = 1.0
    center_sigma: float = 2.0
    norm_low: float = 1.0
    norm_high: float = 99.8
    pixel_size: float | None = None
    gsn_version: str = field(default_factory=_gsn_version)
    history: list[dict[str, float]] = field(default_factory=list)
    train_params: dict[str, Any] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def in_channels(self) -> int:
        """Number of network input channels (image channels plus the RNA map)."""
        return len(self.channels) + 1


# field name -> (accepted types, required)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "channels": ((list, tuple), True),
    "widths": ((list, tuple), True),
    "offset_scale": ((int, float), True),
    "sigma": ((int, float), True),
    "rna_mode": ((str,), False),
    "rna_scale": ((int, float, str), False),
    "center_sigma": ((int, float), False),
    "norm_low": ((int, float), True),
    "norm_high": ((int, float), True),
    "pixel_size": ((int, float, type(None)), True),
    "gsn_version": ((str,), False),
    "history": ((list,), False),
    "train_params": ((dict,), False),
    "rounds": ((list,), False),
}


class GeneSegNetModel:
    """A GeneSegNet network together with its configuration and training history.

    Create one with :func:`gsn.tl.train`, save it with :meth:`save` and read it back with
    :func:`gsn.models.load`.

    Parameters
    ----------
    config
        The model configuration; defaults to :class:`ModelConfig` ``()`` (one ``"DAPI"`` channel,
        the paper's widths).
    net
        An existing network; a freshly initialised :class:`GeneSegUNet` matching ``config`` if omitted.
    source
        Where the model was loaded from (recorded with results).
    """

    def __init__(self, config: ModelConfig | None = None, net: GeneSegUNet | None = None, *, source: str | None = None):
        self.config = config if config is not None else ModelConfig()
        if net is None:
            net = GeneSegUNet(self.config.in_channels, self.config.widths, offset_scale=self.config.offset_scale)
        elif net.in_channels != self.config.in_channels or list(net.widths) != list(self.config.widths):
            raise ValueError(
                f"Network (in_channels={net.in_channels}, widths={list(net.widths)}) does not match the config "
                f"(in_channels={self.config.in_channels}, widths={list(self.config.widths)})."
            )
        self.net = net
        self.source = source
        self.labels: list | None = None
        """Final training labels of recursive training (one array per sample, model pixel grid); not saved."""

    # ------------------------------------------------------------------ convenience accessors
    @property
    def channels(self) -> list[str]:
        """Image channel names the network reads (the RNA map comes after them)."""
        return list(self.config.channels)

    @property
    def history(self) -> list[dict[str, float]]:
        """Per-epoch training history."""
        return self.config.history

    @property
    def rounds(self) -> list[dict[str, Any]]:
        """Per-round records of recursive label refinement (empty after a single round)."""
        return self.config.rounds

    @rounds.setter
    def rounds(self, value) -> None:
        self.config.rounds = list(value)

    @property
    def identity(self) -> str:
        """Short content hash of the weights (first 16 hex digits of a SHA-256), to tell models apart."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.net.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """Identity and configuration as plain values (what segmentation records in ``uns``)."""
        cfg = asdict(self.config)
        cfg.pop("history")
        cfg.pop("train_params")
        cfg.pop("rounds")
        return {
            "identity": self.identity,
            "source": self.source,
            "n_epochs_trained": len(self.config.history),
            **cfg,
        }

    def to(self, device: str | torch.device) -> GeneSegNetModel:
        """Move the network to ``device`` (in place) and return ``self``."""
        self.net.to(resolve_device(device))
        return self

    def copy(self) -> GeneSegNetModel:
        """Deep copy (weights, config and history)."""
        return GeneSegNetModel(copy.deepcopy(self.config), copy.deepcopy(self.net), source=self.source)

    def __repr__(self) -> str:
        c = self.config
        n_params = sum(p.numel() for p in self.net.parameters())
        return (
            f"GeneSegNetModel(channels={c.channels} + [{RNA_CHANNEL!r}], widths={list(c.widths)}, "
            f"params={n_params:,}, sigma={c.sigma}, pixel_size={c.pixel_size}, epochs={len(c.history)}, "
            f"id={self.identity})"
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` (a :func:`torch.save` file of plain values and tensors).

        The file holds a format name and version, the configuration and the weights (on CPU), and
        is read back by :func:`gsn.models.load` without unpickling arbitrary objects.
        """
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        payload = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),
            "state_dict": state,
        }
        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, path)
        logger.info("Saved GeneSegNet model %s to %s", self.identity, path)


def _config_from_dict(cfg: Any, where: str) -> ModelConfig:
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: field 'config' must be a dict, got {type(cfg).__name__}.")
    for name, (types, required) in _FIELDS.items():
        if name not in cfg:
            if required:
                raise ValueError(f"{where}: the model file has no field 'config.{name}'.")
            continue
        if not isinstance(cfg[name], types) or isinstance(cfg[name], bool):
            raise ValueError(
                f"{where}: field 'config.{name}' has type {type(cfg[name]).__name__}, "
                f"expected {' or '.join(t.__name__ for t in types)}."
            )
    known = {k: cfg[k] for k in _FIELDS if k in cfg}
    known["channels"] = [str(c) for c in known["channels"]]
    known["widths"] = [int(w) for w in known["widths"]]
    if not known["channels"]:
        raise ValueError(f"{where}: field 'config.channels' is empty.")
    if len(known["widths"]) < 2 or any(w < 1 for w in known["widths"]):
        raise ValueError(f"{where}: field 'config.widths' must hold at least two positive integers.")
    positive = ["offset_scale", "sigma", "center_sigma", "pixel_size"]
    if not isinstance(known.get("rna_scale", 1.0), str):
        positive.append("rna_scale")
    for name in positive:
        value = known.get(name)
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{where}: field 'config.{name}' must be a positive finite number, got {value!r}.")
    if known.get("rna_scale") not in (None, "auto") and isinstance(known["rna_scale"], str):
        raise ValueError(f"{where}: field 'config.rna_scale' must be a number or 'auto', got {known['rna_scale']!r}.")
    if known.get("rna_mode", "sum") not in ("sum", "max"):
        raise ValueError(f"{where}: field 'config.rna_mode' must be 'sum' or 'max', got {known['rna_mode']!r}.")
    low, high = known["norm_low"], known["norm_high"]
    if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high <= 100):
        raise ValueError(
            f"{where}: fields 'config.norm_low' and 'config.norm_high' must be percentiles with "
            f"0 <= low < high <= 100, got {low!r} and {high!r}."
        )
    return ModelConfig(**known)


def _check_weights(state: dict, where: str) -> None:
    """Every tensor of a state dict finite: a NaN weight makes a network that silently finds no cell."""
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]  # fmt: skip
    if bad:
        raise ValueError(
            f"{where}: field 'state_dict' has NaN or infinite values in {len(bad)} tensor(s) "
            f"({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}); the file is damaged or training diverged."
        )


DEFAULT_MODEL_PATH = Path(__file__).parent / "weights" / "default.pt"


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> GeneSegNetModel:
    """Read a model written by :meth:`GeneSegNetModel.save`, or the default model shipped with gsn.

    Parameters
    ----------
    path
        The model file, or ``"default"`` for the model that ships inside the package (see the model
        card, docs/default_model.md).
    device
        Device to put the weights on (``"auto"`` picks CUDA, then MPS, then CPU).

    Returns
    -------
    The :class:`GeneSegNetModel`.

    Raises
    ------
    ValueError
        If the file is not a gsn model file, or a field is missing or incompatible; the message
        names the field.
    """
    if str(path) == "default":
        if not DEFAULT_MODEL_PATH.is_file():
            raise FileNotFoundError(
                f"The default model {DEFAULT_MODEL_PATH} is missing from this installation; reinstall gsn or "
                "train one with scripts/train_default_model.py."
            )
        path = DEFAULT_MODEL_PATH
    path = Path(path)
    where = f"Cannot load GeneSegNet model {str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file.")
    try:
        # weights_only: the file holds only plain values and tensors, so nothing is unpickled blindly.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt/foreign files
        raise ValueError(f"{where}: not a readable torch file ({type(e).__name__}: {e}).") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: field 'format' is missing or not {FORMAT_NAME!r}; is this a gsn model file?")
    version = payload.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{where}: field 'format_version' is missing.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where}: field 'format_version' is {version}, newer than this gsn supports ({FORMAT_VERSION}); "
            "upgrade gsn."
        )
    if "config" not in payload:
        raise ValueError(f"{where}: the model file has no field 'config'.")
    config = _config_from_dict(payload["config"], where)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"{where}: the model file has no field 'state_dict'.")
    _check_weights(state, where)
    model = GeneSegNetModel(config, source=str(path))
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"{where}: field 'state_dict' does not fit a network with {config.in_channels} input channels and "
            f"widths {config.widths} ({str(e).splitlines()[0]})."
        ) from e
    model.net.eval()
    return model.to(device)


def as_model(model: GeneSegNetModel | str | os.PathLike | None) -> GeneSegNetModel:
    """Accept a model object, a path to a model file, or ``None``/``"default"`` for the shipped default model."""
    if model is None:
        model = "default"
    if isinstance(model, GeneSegNetModel):
        return model
    if isinstance(model, str | os.PathLike):
        return load(model)
    raise TypeError(f"`model` must be a GeneSegNetModel or a path, got {type(model).__name__}.")
