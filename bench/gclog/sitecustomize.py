"""The garbage collector's log of a process `bench/scale.py --gc-log` starts (this directory is put
first on its PYTHONPATH, so Python imports this file at start-up).

Each collection: (CLOCK_MONOTONIC seconds, generation, milliseconds, objects collected), and the
moment packyard.heap.HeapKeeper unfreezes the heap when it stops ("unfreeze"): what is collected
after it is the exit's, not the run's. Written as JSON to $PACKYARD_GC_LOG at each full
(generation 2) collection and at exit: the clock is the one scale.py times the run with, so the
collections can be placed in its phases (the big job, the probes).
"""
import os

_path = os.environ.get("PACKYARD_GC_LOG")
if _path:
    import atexit
    import gc
    import json
    import time

    _log: list = []
    _started = [0.0]

    def _write() -> None:
        with open(_path + ".tmp", "w") as f:
            # dumps, not dump: json.dump streams through the pure-Python encoder, slower and
            # itself a maker of cyclic garbage (its nested closures) in the process it logs
            f.write(json.dumps(_log))
        os.replace(_path + ".tmp", _path)

    def _timed(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - _started[0]) * 1000
        _log.append((time.monotonic(), info["generation"], ms, info["collected"]))
        if info["generation"] == 2:
            _write()

    _unfreeze = gc.unfreeze

    def _marked_unfreeze() -> None:
        _log.append((time.monotonic(), "unfreeze", 0.0, 0))
        _unfreeze()

    gc.unfreeze = _marked_unfreeze
    gc.callbacks.append(_timed)
    atexit.register(_write)
