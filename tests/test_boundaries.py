"""labels_to_polygons: exact pixel-edge outlines, valid geometries, windows and subsets of ids."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import tifffile
from scipy import ndimage
from tests.conftest import data_folder

from gsn.tl import labels_to_polygons


def assert_exact(labels: np.ndarray, polygons, offset=(0, 0), ids=None) -> None:
    """Every geometry is valid, has its cell's pixel count as area and contains exactly its cell's pixel centres."""
    present = np.unique(labels[labels > 0])
    if ids is not None:
        present = np.intersect1d(present, ids)
    np.testing.assert_array_equal(polygons.index.to_numpy(), present)
    assert polygons.index.dtype == np.int64
    geoms = polygons.geometry.to_numpy()
    assert shapely.is_valid(geoms).all(), [shapely.is_valid_reason(g) for g in geoms if not g.is_valid][:3]
    counts = np.bincount(labels.ravel().astype(np.int64))
    np.testing.assert_array_equal(shapely.area(geoms), counts[present])
    row0, col0 = offset
    for cell, geom in zip(present, geoms, strict=True):
        # rasterise back on the cell's bounding box (one pixel wider) by the pixel centres
        x0, y0, x1, y1 = (int(v) for v in geom.bounds)
        r0, r1 = max(y0 - row0 - 1, 0), min(y1 - row0 + 1, labels.shape[0])
        c0, c1 = max(x0 - col0 - 1, 0), min(x1 - col0 + 1, labels.shape[1])
        rr, cc = np.mgrid[r0:r1, c0:c1]
        inside = shapely.contains_xy(geom, cc + col0 + 0.5, rr + row0 + 0.5)
        np.testing.assert_array_equal(inside, labels[r0:r1, c0:c1] == cell, err_msg=f"cell {cell}")
        outside = labels == cell
        outside[r0:r1, c0:c1] = False
        assert not outside.any()


def n_pieces(geom) -> int:
    """Count the polygons of a Polygon or MultiPolygon."""
    return len(geom.geoms) if geom.geom_type == "MultiPolygon" else 1


def test_square_has_its_pixel_corners_and_no_collinear_vertices():
    """A rectangle is its 4 pixel corners."""
    labels = np.zeros((8, 10), np.int32)
    labels[2:5, 3:9] = 4
    polygons = labels_to_polygons(labels)
    geom = polygons.geometry[4]
    assert geom.geom_type == "Polygon"
    assert geom.bounds == (3.0, 2.0, 9.0, 5.0)  # x = col, y = row, pixel edges
    assert len(geom.exterior.coords) == 5  # 4 corners + the closing point
    assert_exact(labels, polygons)


def test_holes_pieces_and_diagonal_contacts():
    """Holes (empty or another cell), pieces, and corner contacts between pieces and within one."""
    labels = np.zeros((16, 16), np.int32)
    labels[1:6, 1:6] = 1
    labels[3, 3] = 0  # a hole of background
    labels[8:13, 1:6] = 2
    labels[10, 3] = 3  # a hole filled by another cell
    labels[1, 8] = labels[2, 9] = 5  # two pixels touching at a corner: two pieces
    labels[8:12, 8:12] = 6
    labels[9:11, 9:11] = 0
    labels[8, 8] = 0  # the hole touches the outside at a corner: one piece, hole and shell meet at a point
    labels[14, 1:4] = labels[14, 6:9] = 7  # two separate pieces
    polygons = labels_to_polygons(labels)
    assert_exact(labels, polygons)
    g = polygons.geometry
    assert len(g[1].interiors) == 1 and len(g[2].interiors) == 1 and len(g[3].interiors) == 0
    assert g[5].geom_type == "MultiPolygon" and len(g[5].geoms) == 2
    assert g[6].geom_type == "Polygon" and len(g[6].interiors) == 1
    assert g[6].exterior.intersection(g[6].interiors[0]).geom_type == "Point"
    assert g[7].geom_type == "MultiPolygon" and len(g[7].geoms) == 2


def test_piece_inside_a_hole_of_the_same_cell():
    """Nested pieces of one cell: each hole goes to the piece around it."""
    labels = np.zeros((13, 13), np.int32)
    labels[1:12, 1:12] = 1
    labels[2:11, 2:11] = 0
    labels[3:10, 3:10] = 1  # a second piece in the first one's hole ...
    labels[4:9, 4:9] = 0
    labels[6, 6] = 1  # ... and a third in the second one's hole
    labels[2, 2] = 1  # joins the outer ring and touches the second piece at a corner: still apart
    polygons = labels_to_polygons(labels)
    assert_exact(labels, polygons)
    geom = polygons.geometry[1]
    assert n_pieces(geom) == 3
    assert sorted(len(p.interiors) for p in geom.geoms) == [0, 1, 1]


@pytest.mark.parametrize("seed", range(6))
def test_random_labels_are_exact(seed):
    """Random multi-label pixels; as many polygons per cell as 4-connected pieces."""
    rng = np.random.default_rng(seed)
    # dense random pixels: many holes, pieces, nested pieces and diagonal contacts
    labels = rng.integers(0, 4, size=(37, 41)) * (rng.random((37, 41)) < 0.6)
    polygons = labels_to_polygons(labels)
    assert_exact(labels, polygons)
    structure = ndimage.generate_binary_structure(2, 1)
    for cell, geom in polygons.geometry.items():
        assert n_pieces(geom) == ndimage.label(labels == cell, structure)[1]


@pytest.mark.parametrize("seed", range(4))
def test_random_binary_at_percolation_density(seed):
    """One cell at the density where pieces, holes and corner contacts abound."""
    rng = np.random.default_rng(100 + seed)
    labels = (rng.random((60, 60)) < 0.55).astype(np.uint8)
    assert_exact(labels, labels_to_polygons(labels))


def test_touching_cells_share_edges():
    """A Voronoi tiling of the image: the polygons tile it exactly."""
    rng = np.random.default_rng(1)
    seeds = np.zeros((80, 90), np.int32)
    seeds[rng.integers(0, 80, 60), rng.integers(0, 90, 60)] = np.arange(1, 61)
    _, (ir, ic) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[ir, ic]
    polygons = labels_to_polygons(labels)
    assert_exact(labels, polygons)
    # a tiling: the union is the whole image, with no overlap
    assert shapely.union_all(polygons.geometry.to_numpy()).area == labels.size


def test_xenium_prior_is_exact():
    """The Xenium crop's 737 prior cells."""
    labels = tifffile.imread(data_folder("xenium_breast_bidcell") / "prior_labels.tif")
    polygons = labels_to_polygons(labels)
    assert len(polygons) == 737
    assert_exact(labels, polygons)


def test_offset_and_ids():
    """The offset moves the coordinates; ids trace a subset, with the same geometries."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, size=(20, 25)) * (rng.random((20, 25)) < 0.7)
    whole = labels_to_polygons(labels)
    moved = labels_to_polygons(labels, offset=(100, -7))
    assert_exact(labels, moved, offset=(100, -7))
    np.testing.assert_array_equal(moved.index, whole.index)
    assert all(
        shapely.equals(shapely.transform(a, lambda xy: xy + [-7, 100]), b)
        for a, b in zip(whole.geometry, moved.geometry, strict=True)
    )
    some = labels_to_polygons(labels, ids=np.array([5, 2, 99]))
    assert list(some.index) == [2, 5]
    assert all(shapely.equals(some.geometry[i], whole.geometry[i]) for i in (2, 5))
    assert_exact(labels, labels_to_polygons(labels, offset=(3, 4), ids=[2]), offset=(3, 4), ids=[2])


def test_window_of_a_larger_image():
    """A window traced with its offset lands on its pixels of the whole image."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=(30, 30)) * (rng.random((30, 30)) < 0.7)
    window = labels[10:20, 5:25]
    polygons = labels_to_polygons(window, offset=(10, 5))
    # the window's cells, clipped to the window, sit where they are in the whole image
    for cell, geom in polygons.geometry.items():
        rr, cc = np.nonzero(window == cell)
        assert shapely.contains_xy(geom, cc + 5 + 0.5, rr + 10 + 0.5).all()
        assert geom.area == rr.size


@pytest.mark.parametrize("labels", [np.zeros((0, 0), np.int32), np.zeros((5, 7), np.int32), np.zeros((3, 0), np.int32)])
def test_empty(labels):
    """No cells: an empty frame with an int64 index."""
    polygons = labels_to_polygons(labels)
    assert len(polygons) == 0 and polygons.index.dtype == np.int64


def test_ids_matching_nothing_and_single_pixels():
    """Ids that match nothing give nothing; single pixels touching nothing are pieces."""
    labels = np.zeros((4, 4), np.int64)
    labels[0, 0] = labels[3, 3] = 9
    assert len(labels_to_polygons(labels, ids=[1, 2])) == 0
    assert len(labels_to_polygons(labels, ids=[])) == 0
    polygons = labels_to_polygons(labels)
    assert polygons.geometry[9].geom_type == "MultiPolygon"
    assert_exact(labels, polygons)


def test_rejects_non_2d():
    """Only 2-D label images."""
    with pytest.raises(ValueError, match="2-D"):
        labels_to_polygons(np.zeros((2, 3, 4), np.int32))
