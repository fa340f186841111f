"""Zhang-Suen thinning as scikit-image's ``skeletonize`` runs it, bit for bit.

The thinned image decides the Hough transform's input, so the seed's lines need the very same
skeleton: scikit-image's lookup table (with its departures from the paper) and its order of
sub-iterations.
"""

from __future__ import annotations

import numpy as np

from ..jit import kernel

# A pixel's 8 neighbours are coded NW=1, N=2, NE=4, E=8, SE=16, S=32, SW=64, W=128. The table
# says in which sub-iteration a set pixel with that neighbourhood is removed: bit 1 the first,
# bit 2 the second.


def _zhang_suen_removal(code: int) -> int:
    """The removal bits the paper's conditions give for one neighbourhood code."""
    p = [(code >> bit) & 1 for bit in (1, 2, 3, 4, 5, 6, 7, 0)]  # N, NE, E, SE, S, SW, W, NW
    north, east, south, west = p[0], p[2], p[4], p[6]
    neighbours = sum(p)
    transitions = sum(1 for k in range(8) if p[k] == 0 and p[(k + 1) % 8] == 1)
    if not (2 <= neighbours <= 6 and transitions == 1):
        return 0
    first = north * east * south == 0 and east * south * west == 0
    second = north * east * west == 0 and north * south * west == 0
    return (1 if first else 0) | (2 if second else 0)


# scikit-image's table departs from the paper's conditions on these neighbourhoods; the seed's
# skeletons come from that table, so parity needs the same values.
_SKIMAGE_TABLE_DEPARTURES = {
    3: 1, 6: 1, 10: 3, 11: 1, 12: 1, 14: 1, 24: 2, 26: 2, 40: 3, 48: 0, 56: 2, 96: 2, 104: 2,
    108: 2, 129: 0, 130: 3, 131: 1, 134: 1, 160: 3, 161: 1, 176: 2, 192: 2, 194: 1, 198: 1,
    224: 2,
}


def _thinning_table() -> np.ndarray:
    table = np.array([_zhang_suen_removal(code) for code in range(256)], np.uint8)
    for code, removal in _SKIMAGE_TABLE_DEPARTURES.items():
        table[code] = removal
    return table


THINNING_TABLE = _thinning_table()


_QUEUED = 3  # a set pixel (bit 1) that is on the border list (bit 2)

# Kernels index flat buffers with unsigned integers: Numba adds a negative-index fix-up to every
# access through a signed index, which costs more than the work itself in these loops.


@kernel
def _neighbour_code(flat, idx, width):
    """Neighbourhood code of the pixel at unsigned flat index ``idx`` (never on the outer ring)."""
    one = np.uint64(1)
    up = idx - width
    down = idx + width
    return ((flat[up - one] & 1) | ((flat[up] & 1) << 1) | ((flat[up + one] & 1) << 2)
            | ((flat[idx + one] & 1) << 3) | ((flat[down + one] & 1) << 4) | ((flat[down] & 1) << 5)
            | ((flat[down - one] & 1) << 6) | ((flat[idx - one] & 1) << 7))


@kernel
def _list_border(image, border):
    """Mark and list the set pixels that have an empty neighbour; returns how many."""
    height, width = image.shape
    size = 0
    for i in range(1, height - 1):
        above = image[i - 1]
        row = image[i]
        below = image[i + 1]
        for j in range(1, width - 1):
            if row[j] and not (above[j - 1] & above[j] & above[j + 1] & row[j - 1] & row[j + 1]
                               & below[j - 1] & below[j] & below[j + 1]):
                row[j] = _QUEUED
                border[size] = i * width + j
                size += 1
    return size


@kernel
def _thin_in_place(image, table, border, removed):
    """Thin a 0/1 image whose outer rows and columns are 0 down to its skeleton, as skimage does.

    Each sub-iteration decides every removal from the image as it stood before it, then applies
    them all; sub-iterations alternate until a full round removes nothing. Only pixels with an
    empty neighbour can go (the table never removes a pixel with 8 set neighbours), so the kernel
    keeps a list of those instead of rescanning the region: the cost follows the shape's border,
    not its box. ``border`` and ``removed`` are unsigned scratch of the image's size.
    """
    flat = image.reshape(-1)
    width = np.uint64(image.shape[1])
    one = np.uint64(1)
    size = _list_border(image, border)
    changed = True
    while changed:
        changed = False
        for pass_bit in (1, 2):
            count = 0
            for k in range(size):
                if table[_neighbour_code(flat, np.uint64(border[k]), width)] & pass_bit:
                    removed[count] = border[k]
                    count += 1
            if count == 0:
                continue
            changed = True
            for k in range(count):
                flat[np.uint64(removed[k])] = 0
            kept = 0
            for k in range(size):
                if flat[np.uint64(border[k])]:
                    border[kept] = border[k]
                    kept += 1
            size = kept
            for k in range(count):  # neighbours of removed pixels now touch the background
                idx = np.uint64(removed[k])
                for nb in (idx - width - one, idx - width, idx - width + one, idx - one, idx + one,
                           idx + width - one, idx + width, idx + width + one):
                    if flat[nb] == 1:
                        flat[nb] = _QUEUED
                        border[size] = nb
                        size += 1
    for k in range(size):
        flat[np.uint64(border[k])] = 1
