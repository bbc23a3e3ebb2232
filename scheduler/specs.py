"""Parsed job specs, cached: a job record carries its spec as JSON text, and parsing it for every
decision (every evaluation, every Start, every Status call) would cost more than the decision.
"""
from __future__ import annotations

from packyard.records import JobRecord
from packyard.spec import JobSpec, load_json


class SpecCache:
    def __init__(self) -> None:
        self._specs: dict[tuple[str, int], tuple[str, JobSpec]] = {}

    def of(self, job: JobRecord) -> JobSpec:
        # keyed by name and version, and checked against the text: a purged job's name can come
        # back as version 1 of another spec
        key = (job.name, job.version)
        cached = self._specs.get(key)
        if cached is None or cached[0] != job.spec_json:
            cached = self._specs[key] = (job.spec_json, load_json(job.spec_json))
        return cached[1]
