"""Image locality (issue 16, Kubernetes' ImageLocality): among hosts that score the same, prefer
those that already hold the group's registry image, so its instances start without a pull.

A tie-break only: the bonus (TIE) is far below any difference the policy's scores make, so the
packing order, and with it the density the benchmarks measure, is unchanged; it decides only
between hosts the policy finds equal. Which hosts hold the image is the scheduler's knowledge
(GroupAsk.image_hosts: where instances running the same image are placed), not the agents' report.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scheduler.placement.table import HostTable

TIE = 1e-9


def bonus(table: HostTable, image_hosts: Sequence[str]) -> np.ndarray:
    """(N,) TIE on the hosts holding the image, 0 elsewhere."""
    out = np.zeros(len(table))
    if image_hosts:
        vocab = table.columns["node.name"].vocab
        rows = [vocab[h] for h in set(image_hosts) if h in vocab]
        out[rows] = TIE
    return out
