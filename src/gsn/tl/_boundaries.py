"""Cell polygons from a label image, indexed by label id.

The outlines follow pixel edges exactly, so a polygon covers precisely its cell's pixels: its area is
the cell's pixel count and counting points in polygons (what ``sopa.aggregate`` does) gives the
same counts as reading the label under each point.

How: every side of a cell pixel that faces another label is a directed edge, oriented so that the
cell lies on its right when drawn with rows going down. Each edge's successor along the outline
follows from the 2 x 2 pixels around its end point, so the successor array is built in one
vectorised pass for all cells at once; the outlines are the cycles of that permutation, found and
walked by scipy's compiled graph routines rather than by a Python loop per cell or per vertex.
"""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import shapely
from scipy import sparse
from scipy.sparse.csgraph import connected_components, depth_first_order

# Sides of a pixel: 0 top, 1 right, 2 bottom, 3 left, walked clockwise on screen (rows down), so the
# pixel is on the right of each of its directed sides. Travel direction (row, col) of side s:
_STEP_R = np.array([0, 1, 0, -1])
_STEP_C = np.array([1, 0, -1, 0])
# ... and its outward normal, towards the neighbour across that side, is the direction of side s - 1.
_NORMAL_R = np.roll(_STEP_R, 1)
_NORMAL_C = np.roll(_STEP_C, 1)
# Corner where side s starts, relative to the pixel's top-left corner.
_START_R = np.array([0, 0, 1, 1])
_START_C = np.array([0, 1, 1, 0])


def _edges(labels: np.ndarray, ids: np.ndarray | None):
    """Directed boundary edges: keys ``4 * pixel + side`` (pixel = flat index in the padded image, sorted), labels."""
    h, w = labels.shape
    padded = np.pad(labels, 1)
    inner = padded[1:-1, 1:-1]
    # each pixel-edge difference once: between rows (tops and bottoms) and between columns (lefts and rights)
    rows_differ = padded[1:, 1:-1] != padded[:-1, 1:-1]
    cols_differ = padded[1:-1, 1:] != padded[1:-1, :-1]
    fg = inner != 0
    sides = (rows_differ[:-1], cols_differ[:, 1:], rows_differ[1:], cols_differ[:, :-1])  # top, right, bottom, left
    on_boundary = fg & (sides[0] | sides[1] | sides[2] | sides[3])
    row, col = np.nonzero(on_boundary)
    del on_boundary, fg
    # (pixel, side) order: sorted keys, so that they can be looked up by bisection
    flat = np.flatnonzero(np.stack([s[row, col] for s in sides], axis=1))
    row, col, side = row[flat // 4], col[flat // 4], flat % 4
    key = ((row + 1) * (w + 2) + col + 1) * 4 + side  # pixels numbered in the padded image
    lab = inner[row, col]
    if ids is not None:
        keep = np.isin(lab, ids)
        key, row, col, lab = key[keep], row[keep], col[keep], lab[keep]
    return padded, key, row, col, lab


def _successors(padded: np.ndarray, key: np.ndarray, lab: np.ndarray):
    """Next edge of every edge along its outline (splitting cells at diagonal contacts), and the saddle edges.

    At the end point of an edge, with ``q`` the pixel straight ahead and ``q2`` the one ahead and across
    the edge: ``q`` not in the cell is a convex corner (turn onto the pixel's next side), ``q`` in the
    cell and ``q2`` not is a straight run, both in the cell is a concave corner (onto ``q2``'s previous
    side). A convex corner with ``q2`` in the cell is a saddle: the cell touches itself diagonally there.
    Returns the successor, the saddle edges, their successor when joining there instead, and the other
    saddle edge at the same point.
    """
    stride = padded.shape[1]
    pix, side = np.divmod(key, 4)
    q = pix + _STEP_R[side] * stride + _STEP_C[side]
    q2 = q + _NORMAL_R[side] * stride + _NORMAL_C[side]
    flat = padded.ravel()
    ahead = flat[q] == lab
    across = flat[q2] == lab
    nxt = np.where(~ahead, pix * 4 + (side + 1) % 4, np.where(across, q2 * 4 + (side + 3) % 4, q * 4 + side))
    saddle = np.flatnonzero(~ahead & across)
    join = q2[saddle] * 4 + (side[saddle] + 3) % 4
    partner = q2[saddle] * 4 + (side[saddle] + 2) % 4
    index = np.searchsorted(key, np.concatenate([nxt, join, partner]))
    n, k = key.size, saddle.size
    return index[:n], saddle, index[n : n + k], index[n + k :]


def _cycles(succ: np.ndarray) -> tuple[int, np.ndarray]:
    n = succ.size
    graph = sparse.csr_matrix((np.ones(n, dtype=np.int8), succ, np.arange(n + 1)), shape=(n, n))
    return connected_components(graph, directed=True, connection="strong")


def _walk(succ: np.ndarray, n_rings: int, ring: np.ndarray):
    """Edges in outline order, ring after ring, and each ring's first position in that order.

    The rings are cut at their first edge and chained into one path, so a single depth-first walk
    (compiled, linear time) lists every ring in turn.
    """
    n = succ.size
    first = np.full(n_rings, n, dtype=np.int64)
    np.minimum.at(first, ring, np.arange(n))
    roots = np.sort(first)
    pred = np.empty(n, dtype=np.int64)
    pred[succ] = np.arange(n)
    tails = pred[roots]
    nxt = succ.astype(np.int64, copy=True)
    nxt[tails[:-1]] = roots[1:]
    has_next = np.ones(n, dtype=bool)
    has_next[tails[-1]] = False
    indptr = np.concatenate([[0], np.cumsum(has_next)])
    graph = sparse.csr_matrix((np.ones(n - 1, dtype=np.int8), nxt[has_next], indptr), shape=(n, n))
    order = depth_first_order(graph, int(roots[0]), directed=True, return_predecessors=False)
    sizes = np.bincount(ring, minlength=n_rings)[ring[roots]]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return order, starts, sizes


def _owners(rings, ring_label, area, shell):
    """Polygon (index into the shells, sorted by label) of every ring.

    A hole belongs to the only shell of its cell, or, for a cell in several pieces, to the smallest
    of that cell's shells that covers it (a piece can sit inside another piece's hole).
    """
    shells = np.flatnonzero(shell)
    shells = shells[np.argsort(ring_label[shells], kind="stable")]
    owner = np.empty(ring_label.size, dtype=np.int64)
    owner[shells] = np.arange(shells.size)
    holes = np.flatnonzero(~shell)
    if not holes.size:
        return owner
    shell_labels = ring_label[shells]
    lo = np.searchsorted(shell_labels, ring_label[holes], side="left")
    count = np.searchsorted(shell_labels, ring_label[holes], side="right") - lo
    single = count == 1
    owner[holes[single]] = lo[single]
    multi = np.flatnonzero(~single)
    if multi.size:
        # candidate (hole, shell) pairs within each cell
        reps = count[multi]
        pair_hole = np.repeat(multi, reps)
        within = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        pair_shell = np.repeat(lo[multi], reps) + within
        shell_polys = shapely.polygons(rings[shells[pair_shell]])
        hole_polys = shapely.polygons(rings[holes[pair_hole]])
        ok = shapely.covers(shell_polys, hole_polys)
        pair_hole, pair_shell = pair_hole[ok], pair_shell[ok]
        best = np.lexsort((area[shells[pair_shell]], pair_hole))
        pair_hole, pair_shell = pair_hole[best], pair_shell[best]
        first = np.ones(pair_hole.size, dtype=bool)
        first[1:] = pair_hole[1:] != pair_hole[:-1]
        owner[holes[pair_hole[first]]] = pair_shell[first]
    return owner


def labels_to_polygons(
    labels: np.ndarray,
    *,
    progress: bool | None = None,
    offset: tuple[int, int] = (0, 0),
    ids: Sequence[int] | np.ndarray | None = None,
) -> gpd.GeoDataFrame:
    """Trace every cell of a label image as a polygon along its pixels' edges.

    Pixel ``(row r, col c)`` covers ``x`` in ``[c, c + 1)`` and ``y`` in ``[r, r + 1)`` (spatialdata's
    pixel frame), so vertices are integer pixel corners and each geometry covers exactly its cell's
    pixels: its area is the cell's pixel count, enclosed background or other cells are holes. A cell
    in several 4-connected pieces is a MultiPolygon; pixels that touch only at a corner belong to
    different pieces. Where a piece touches itself at a corner, its outline and a hole meet at that
    point. Every geometry is valid, without collinear vertices.

    Parameters
    ----------
    labels
        2D integer label image, 0 = background.
    progress
        Accepted for compatibility and ignored: the tracing is vectorised over all cells.
    offset
        ``(row0, col0)`` added to the coordinates, for a window of a larger image.
    ids
        Trace only these label ids (default: all).

    Returns
    -------
    GeoDataFrame indexed by label id (ascending), in the label image's pixel frame.
    """
    del progress
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}.")
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    if ids is not None:
        ids = np.asarray(ids).ravel()
    empty = gpd.GeoDataFrame(geometry=[], index=np.zeros(0, dtype=np.int64))
    if labels.size == 0:
        return empty
    padded, key, row, col, lab = _edges(labels, ids)
    if not key.size:
        return empty
    succ, saddle, join, partner = _successors(padded, key, lab)
    del padded
    side = key % 4
    n_rings, ring = _cycles(succ)
    # Splitting at every diagonal contact keeps pieces apart, but where a piece meets itself at a
    # corner one outline passes that corner twice (a self-touching ring, invalid); joining there instead
    # splits it into a shell and a hole that touch at one point, which is valid.
    flip = ring[saddle] == ring[partner]
    if flip.any():
        succ[saddle[flip]] = join[flip]
        n_rings, ring = _cycles(succ)
    order, starts, sizes = _walk(succ, n_rings, ring)

    # corners: vertices where the direction changes (the previous edge has another side)
    s = side[order]
    prev = np.roll(s, 1)
    prev[starts] = s[starts + sizes - 1]
    corner = s != prev
    e = order[corner]
    x = col[e] + _START_C[side[e]]
    y = row[e] + _START_R[side[e]]
    n_corners = np.add.reduceat(corner.astype(np.int64), starts)
    rings = shapely.linearrings(x + offset[1], y + offset[0], indices=np.repeat(np.arange(n_rings), n_corners))

    # shoelace (exact in integers): shells come out clockwise on screen, i.e. positive in (x = col, y = row)
    cstart = np.cumsum(n_corners) - n_corners
    nx, ny = np.roll(x, -1), np.roll(y, -1)
    last = cstart + n_corners - 1
    nx[last], ny[last] = x[cstart], y[cstart]
    area2 = np.add.reduceat(x * ny - nx * y, cstart)
    shell = area2 > 0
    ring_label = lab[order[starts]]

    owner = _owners(rings, ring_label, np.abs(area2), shell)
    by_polygon = np.lexsort((~shell, owner))  # each polygon's shell first, then its holes
    polygons = shapely.polygons(rings[by_polygon], indices=owner[by_polygon])
    polygon_label = ring_label[shell][np.argsort(ring_label[shell], kind="stable")]

    cells, first, n_pieces = np.unique(polygon_label, return_index=True, return_counts=True)
    geoms = polygons[first]
    multi = np.repeat(n_pieces > 1, n_pieces)
    if multi.any():
        cell_of_polygon = np.repeat(np.arange(cells.size), n_pieces)
        shapely.multipolygons(polygons[multi], indices=cell_of_polygon[multi], out=geoms)
    return gpd.GeoDataFrame(geometry=geoms, index=cells.astype(np.int64))
