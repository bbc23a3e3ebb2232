"""How the engine counts a host's GPUs.

`devices` (the default, and the only model the scheduler uses): a host with N GPUs has N devices
of 1000 milli. A share (less than one GPU) must fit on one device; whole GPUs take whole free
devices. That is what a real host can run: two 0.6 shares cannot share one GPU.

`pooled`: a host's GPUs are one amount that any ask may take part of, as if a 0.6 share could be
split over two GPUs. Physically wrong, but it is how the peers' figures quoted in issue 3 were
measured (bench/PACKING.md); `packyard-bench pack --gpu-model pooled` compares on those terms.
Pooled is one device as large as any host's GPUs together: every ask is then a share of it, and
the engine's device rules give the pooled ones without a second code path.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

DEVICES, POOLED = "devices", "pooled"
MODELS = (DEVICES, POOLED)
_SIZES = {DEVICES: 1000, POOLED: 10**9}

# milli-GPUs in one device under the model in use (read at call time by the engine's modules)
device_milli = _SIZES[DEVICES]


def use(model: str) -> None:
    """Count GPUs by `model` from now on, for the whole process (build tables after this)."""
    global device_milli
    if model not in _SIZES:
        raise ValueError(f"unknown GPU model {model!r}: {' or '.join(MODELS)}")
    device_milli = _SIZES[model]


@contextmanager
def using(model: str) -> Iterator[None]:
    """`use(model)` for the length of a block (tests)."""
    before = device_milli
    use(model)
    try:
        yield
    finally:
        globals()["device_milli"] = before
