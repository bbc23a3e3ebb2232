"""Records to protobuf messages, for what both the API and the agents' calls carry."""
from __future__ import annotations

from packyard.records import ResourceAmounts
from packyard.v1 import common_pb2


def to_resources(a: ResourceAmounts) -> common_pb2.Resources:
    return common_pb2.Resources(cpu_milli=a.cpu_milli, memory_bytes=a.memory_bytes,
                                disk_bytes=a.disk_bytes, gpu_milli=a.gpu_milli)
