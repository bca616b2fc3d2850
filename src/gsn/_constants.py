"""Names of every element, column and ``uns`` entry that gsn writes.

One place for key names, as squidpy's ``Key``: code never spells these strings itself.
"""

from __future__ import annotations

DEFAULT_KEY = "genesegnet"
"""Default prefix of the elements written by one segmentation run."""

REGION_KEY = "region"
INSTANCE_KEY = "cell_id"
SPATIAL_KEY = "spatial"
"""``obsm`` key of the cell centroids (x, y) in the units of ``"global"`` (µm for spatialdata-io data)."""
SPATIAL_PX_KEY = "spatial_px"
"""``obsm`` key of the cell centroids (x, y) in the pixel frame of the labels."""
AREA_KEY = "area"
"""``obs`` column of the cell area in pixels of the labels."""
AREA_UM2_KEY = "area_um2"
"""``obs`` column of the cell area in squared units of ``"global"`` (µm²); only when the pixel size is known."""
UNS_KEY = "genesegnet"
RNA_MAP_KEY = "gsn_rna_map"
RNA_CHANNEL = "rna"
WATERSHED_KEY = "watershed"


class Key:
    """Element and column names derived from a segmentation prefix (``key_added``)."""

    @staticmethod
    def labels(key: str) -> str:
        """Labels element of a segmentation."""
        return f"{key}_labels"

    @staticmethod
    def boundaries(key: str) -> str:
        """Shapes element (polygons) of a segmentation."""
        return f"{key}_boundaries"

    @staticmethod
    def table(key: str) -> str:
        """Table (cells x genes) of a segmentation."""
        return f"{key}_table"

    @staticmethod
    def cell_id(key: str) -> str:
        """Column on the transcripts with the cell each molecule was assigned to (0 = none)."""
        return f"{key}_cell_id"

    @staticmethod
    def prefix(name: str) -> str:
        """Return the segmentation prefix of an element name written by gsn (``x_labels`` -> ``x``)."""
        for suffix in ("_labels", "_boundaries", "_table", "_cell_id"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return name


class SopaAttrs:
    """Keys of ``sdata.attrs`` with which sopa records which element plays which role in a pipeline.

    gsn reads the image and transcripts from them when no key is given, and records its own
    boundaries, so that ``sopa.aggregate``, ``sopa.io.explorer.write`` and sopa's report find them.
    """

    IMAGE = "cell_segmentation_image"
    POINTS = "transcripts_dataframe"
    BOUNDARIES = "boundaries_shapes"
