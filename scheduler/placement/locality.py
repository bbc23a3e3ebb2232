"""Image locality (issue 16, Kubernetes' ImageLocality): among hosts that score the same, prefer
those that already hold the group's registry image, and of those the ones holding more of its
bytes, so its instances start without a pull (or with the smallest one).

A tie-break only: the bonus (at most TIE) is far below any difference the policy's scores make, so
the packing order, and with it the density the benchmarks measure, is unchanged; it decides only
between hosts the policy finds equal. GroupAsk.image_bytes says what each host holds of the image:
the agents publish their stores' images with their node records (agent/imagereport.py), and the
scheduler matches the spec's reference against them (scheduler/images.py).

Like Kubernetes' score, a host's share grows with the bytes it holds (a host without the image:
0); unlike it, the spread over hosts does not scale it down: the bonus only orders equal hosts.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from scheduler.placement.table import HostTable

TIE = 1e-9


def bonus(table: HostTable, image_bytes: Mapping[str, int]) -> np.ndarray:
    """(N,): TIE x (bytes of the image the host holds / the most any host holds); 0 elsewhere."""
    out = np.zeros(len(table))
    vocab = table.columns["node.name"].vocab
    held = {vocab[h]: b for h, b in image_bytes.items() if h in vocab and b > 0}
    if held:
        most = max(held.values())
        rows = np.fromiter(held.keys(), dtype=np.intp, count=len(held))
        out[rows] = TIE * np.fromiter(held.values(), dtype=float, count=len(held)) / most
    return out
