"""A deterministic stand-in for the network, for testing the inference plumbing without training.

On an image of separated bright disks it is exact: confidence = disk pixels, centres = peaks of a
Gaussian blur of the image (unique at each disk's centre), offsets = 0 (nearest-centre assignment).
It is translation-equivariant like a convolutional network, so tiling and blocking must not change
its result away from image borders. Module-level so dask workers can unpickle it.
"""

from __future__ import annotations

import numpy as np
import spatialdata as sd
import torch
from spatialdata.models import Image2DModel, PointsModel
from spatialdata.transformations import Identity

from gsn.models import GeneSegNetModel, ModelConfig
from gsn.models._unet import UNetOutput


class OracleNet(torch.nn.Module):
    in_channels = 2
    widths = (4, 8, 8, 8)

    def __init__(self, sigma: float = 3.0):
        super().__init__()
        r = int(3 * sigma)
        d = torch.arange(-r, r + 1, dtype=torch.float32)
        g = torch.exp(-(d**2) / (2 * sigma**2))
        self.register_buffer("kernel", (g[:, None] * g[None, :] / g.sum() ** 2)[None, None])
        self.pad = r
        self.unused = torch.nn.Parameter(torch.zeros(1))  # inference code reads the device off a parameter

    def forward(self, x: torch.Tensor) -> UNetOutput:
        image = x[:, :1]
        blur = torch.nn.functional.conv2d(image, self.kernel, padding=self.pad)
        peak = torch.nn.functional.max_pool2d(blur, 3, stride=1, padding=1)
        centre = ((blur >= peak) & (blur > 0.2)).float()
        # Near a tile's edge the blur sees a cut disk (a spurious peak); like a real network's
        # low-confidence border, report no centre there and let overlapping tiles decide.
        p = self.pad
        border = torch.ones_like(centre)
        border[..., p:-p, p:-p] = 0
        centre = centre * (1 - border)
        return UNetOutput(40 * (image - 0.5), 40 * (centre - 0.5), torch.zeros_like(x[:, :2]))


def oracle_model() -> GeneSegNetModel:
    return GeneSegNetModel(ModelConfig(channels=["DAPI"], widths=[4, 8, 8, 8], sigma=3.0), OracleNet())


def disks_sdata(shape=(300, 340), spacing=30, radius=9, seed=0) -> tuple[sd.SpatialData, np.ndarray]:
    """Bright disks on a jittered grid (integer centres), transcripts around them, and the true labels."""
    rng = np.random.default_rng(seed)
    h, w = shape
    rr, cc = np.mgrid[:h, :w]
    labels = np.zeros(shape, np.int32)
    k = 0
    for y in range(spacing // 2, h - radius, spacing):
        for x in range(spacing // 2, w - radius, spacing):
            cy, cx = y + rng.integers(-4, 5), x + rng.integers(-4, 5)
            k += 1
            labels[(rr - cy) ** 2 + (cc - cx) ** 2 <= radius**2] = k
    image = (labels > 0).astype(np.float32) * 1000 + 50
    pts = rng.uniform([0, 0], [w, h], size=(5000, 2))
    import pandas as pd

    df = pd.DataFrame({"x": pts[:, 0], "y": pts[:, 1], "gene": pd.Categorical(rng.choice(["a", "b"], len(pts)))})
    t = {"global": Identity()}
    sdata = sd.SpatialData(
        images={"dapi": Image2DModel.parse(image[None], dims=("c", "y", "x"), c_coords=["DAPI"], transformations=t)},
        points={
            "transcripts": PointsModel.parse(
                df, coordinates={"x": "x", "y": "y"}, feature_key="gene", transformations=t
            )
        },  # fmt: skip
    )
    return sdata, labels
