"""How the engine counts a host's GPUs: the models `EngineConfig.gpu_model` names.

`devices` (the default, and the only model the scheduler uses): a host with N GPUs has N devices
of 1000 milli. A share (less than one GPU) must fit on one device; whole GPUs take whole free
devices. That is what a real host can run: two 0.6 shares cannot share one GPU.

`pooled`: a host's GPUs are one amount that any ask may take part of, as if a 0.6 share could be
split over two GPUs. Physically wrong, but it is how the peers' figures quoted in issue 3 were
measured (bench/PACKING.md); `packyard-bench pack --gpu-model pooled` compares on those terms.
Pooled is one device as large as any host's GPUs together: every ask is then a share of it, and
the engine's device rules give the pooled ones without a second code path.

A model is only a device size here. Whatever lays out or reads devices is given that size
(HostTable.from_hosts(gpu_model=...), WorkloadMix(device_milli=...), the Plan from its config),
so two models can be in use in one process.
"""
from __future__ import annotations

DEVICES, POOLED = "devices", "pooled"
MODELS = (DEVICES, POOLED)
ONE_GPU = 1000   # milli-GPUs in one real device: the size under `devices`
_SIZES = {DEVICES: ONE_GPU, POOLED: 10**9}


def device_milli(model: str) -> int:
    """milli-GPUs in one device under `model`."""
    size = _SIZES.get(model)
    if size is None:
        raise ValueError(f"unknown GPU model {model!r}: {' or '.join(MODELS)}")
    return size
