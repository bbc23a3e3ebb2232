"""What a scheduler's heap holds, three ways. Put this directory first on PYTHONPATH (e.g. for
`bench/scale.py`, whose processes inherit it and the variables below); only the scheduler process
(`-m scheduler.main`) is affected.

PACKYARD_CENSUS=FILE: on SIGUSR2 the collector's objects and those they hold directly, by type,
and the largest containers, to FILE.1, FILE.2...; no tracing, so the process keeps its speed (a
5,000 x 100,000 run completes; the census itself raises the process's peak RSS).

PACKYARD_TRACEMALLOC=FILE: the scheduler runs under tracemalloc. A thread looks at the
traced size every quarter second; each time it is 2% above the last snapshot's, it takes a new one
and writes its largest allocation sites (by line, PACKYARD_TRACEMALLOC_FRAMES frames, default 1)
to FILE: at the end FILE holds the heap near its peak (a 5,000 x 100,000 run stalls under it:
scale.py gives up at ~65,000 placed). Tracing slows the process several times: its figures are
of memory, never of time.

PACKYARD_MALLOCSTATS=FILE: which allocator holds the RSS, without tracing: each second (or
PACKYARD_MALLOCSTATS_EVERY) a line to FILE.timeline (RSS, pymalloc's arenas and the bytes in their
blocks, glibc's heap in use / free / mapped from mallinfo2), and sys._debugmallocstats() at the
highest RSS and at the last sample (FILE.peak, FILE.last). With PACKYARD_CENSUS too,
PACKYARD_CENSUS_IDLE_MIB=N takes one census by itself on the plateau (RSS over N MiB, the process
idle for two samples); the census raises the peak, so not in a run whose peak is the figure.

All three work on any tree (they touch no packyard code), so two trees can be set side by side
at the same point.
"""
import os
import sys

_path = os.environ.get("PACKYARD_TRACEMALLOC")
if _path and "scheduler.main" in getattr(sys, "orig_argv", ()):
    import threading
    import time
    import tracemalloc

    _frames = int(os.environ.get("PACKYARD_TRACEMALLOC_FRAMES", "1"))
    tracemalloc.start(_frames)

    def _write(snap: tracemalloc.Snapshot, current: int, peak: int) -> None:
        key = "traceback" if _frames > 1 else "lineno"
        stats = snap.statistics(key)
        lines = [f"traced now {current / 2**20:.1f} MiB, peak so far {peak / 2**20:.1f} MiB, "
                 f"at {time.monotonic():.1f} (CLOCK_MONOTONIC)"]
        for s in stats[:80]:
            where = " <- ".join(f"{f.filename.rsplit('/', 2)[-2:][-1]}:{f.lineno}"
                                if "site-packages" in f.filename else
                                f"{'/'.join(f.filename.rsplit('/', 2)[-2:])}:{f.lineno}"
                                for f in s.traceback)
            lines.append(f"{s.size / 2**20:8.2f} MiB {s.count:9d} blocks  {where}")
        with open(_path + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(_path + ".tmp", _path)

    def _watch() -> None:
        taken = 0
        while True:
            time.sleep(0.25)
            current, peak = tracemalloc.get_traced_memory()
            if current > taken * 1.02 and current > 16 * 2**20:
                taken = current
                _write(tracemalloc.take_snapshot(), current, peak)

    threading.Thread(target=_watch, name="tracemem", daemon=True).start()

if os.environ.get("PACKYARD_CENSUS") and "scheduler.main" in getattr(sys, "orig_argv", ()):
    # Without tracing (the process runs at its own speed): on SIGUSR2, what the collector's objects
    # and those they hold directly add up to, by type, and the largest containers, to
    # $PACKYARD_CENSUS (a numbered file each signal).
    import gc
    import signal
    from collections import Counter

    _census_n = [0]

    def _census(signum, frame) -> None:
        # a heap packyard.heap.HeapKeeper froze is in the permanent generation, which
        # get_objects leaves out: thawed for the count, frozen again (gc.freeze moves all)
        frozen = gc.get_freeze_count()
        if frozen:
            gc.unfreeze()
        objs = gc.get_objects()
        if frozen:
            gc.freeze()
        seen, by_type, count = set(), Counter(), Counter()
        large, large_n = Counter(), Counter()     # objects over pymalloc's 512 bytes: glibc's
        big = []
        for o in objs:
            for x in (o, *gc.get_referents(o)):
                if id(x) in seen:
                    continue
                seen.add(id(x))
                size = sys.getsizeof(x)
                name = type(x).__name__
                by_type[name] += size
                count[name] += 1
                if size > 512:
                    large[name] += size
                    large_n[name] += 1
                if type(x) in (dict, list, set, frozenset, bytearray) and size > 256 * 1024:
                    sample = next(iter(x), None) if not isinstance(x, bytearray) else None
                    big.append((size, name, len(x), repr(sample)[:60], repr(sample and (x[sample] if isinstance(x, dict) else ""))[:60]))
        lines = [f"{n:>14,} B {count[t]:>9,}  {t}" for t, n in by_type.most_common(40)]
        lines.append("--- objects over 512 bytes (glibc's, not pymalloc's), by type")
        lines += [f"{n:>14,} B {large_n[t]:>9,}  {t}" for t, n in large.most_common(25)]
        lines.append("--- largest containers: size, type, len, a key, its value")
        lines += [f"{s:>12,} {t} {n:,} {k} {v}" for s, t, n, k, v in sorted(big, reverse=True)[:40]]
        _census_n[0] += 1
        with open(f"{os.environ['PACKYARD_CENSUS']}.{_census_n[0]}", "w") as f:
            f.write("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR2, _census)

if os.environ.get("PACKYARD_MALLOCSTATS") and "scheduler.main" in getattr(sys, "orig_argv", ()):
    # Without tracing: which allocator holds the RSS. Every PACKYARD_MALLOCSTATS_EVERY seconds
    # (default 1) a line to $PACKYARD_MALLOCSTATS.timeline: the process's RSS (anonymous part),
    # pymalloc's arenas (1 MiB each, given back only when empty) and the bytes in their blocks in
    # use, glibc's heap (mallinfo2: in use, free, mapped blocks). At each new peak of RSS, and the
    # last sample always, sys._debugmallocstats() in full (per size class) to .peak / .last.
    import ctypes
    import re
    import signal
    import tempfile
    import threading
    import time

    _base = os.environ["PACKYARD_MALLOCSTATS"]
    _every = float(os.environ.get("PACKYARD_MALLOCSTATS_EVERY", "1"))

    class _Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")]

    _libc = ctypes.CDLL(None)
    _libc.mallinfo2.restype = _Mallinfo2

    def _rss() -> tuple[int, int]:
        with open("/proc/self/status") as f:
            d = {ln.split(":")[0]: int(ln.split()[1]) for ln in f if ln.startswith(("VmRSS", "RssAnon"))}
        return d["VmRSS"], d["RssAnon"]

    def _mallocstats() -> str:
        # _debugmallocstats writes to C's stderr: fd 2 pointed at a file for the call
        with tempfile.TemporaryFile("w+") as tmp:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(tmp.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            return tmp.read()

    def _figure(text: str, name: str) -> int:
        m = re.search(rf"^# {name}\s*=\s*([\d,]+)", text, re.M)
        return int(m.group(1).replace(",", "")) if m else -1

    def _cpu() -> float:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # PACKYARD_CENSUS_IDLE_MIB=N (with PACKYARD_CENSUS): one census, by a SIGUSR2 to itself, the
    # first time the RSS is over N MiB and the process used under a tenth of a CPU for 2 samples
    # (the plateau after a big job, whatever its timing in this tree)
    _idle_mib = float(os.environ.get("PACKYARD_CENSUS_IDLE_MIB", "0"))

    def _watch() -> None:
        t0, peak = time.monotonic(), 0
        cpus, censused = [_cpu()], not (_idle_mib and os.environ.get("PACKYARD_CENSUS"))
        with open(_base + ".timeline", "w", buffering=1) as out:
            out.write("t_s rss_mib anon_mib arenas arenas_hwm pymalloc_used_mib glibc_heap_mib "
                      "glibc_used_mib glibc_free_mib glibc_mmap_mib\n")
            while True:
                time.sleep(_every)
                text = _mallocstats()
                rss, anon = _rss()
                mi = _libc.mallinfo2()
                out.write(f"{time.monotonic() - t0:.1f} {rss / 1024:.1f} {anon / 1024:.1f} "
                          f"{_figure(text, 'arenas allocated current')} "
                          f"{_figure(text, 'arenas highwater mark')} "
                          f"{_figure(text, 'bytes in allocated blocks') / 2**20:.1f} "
                          f"{mi.arena / 2**20:.1f} {mi.uordblks / 2**20:.1f} {mi.fordblks / 2**20:.1f} "
                          f"{mi.hblkhd / 2**20:.1f}\n")
                if rss > peak:
                    peak = rss
                    with open(_base + ".peak", "w") as f:
                        f.write(text)
                with open(_base + ".last", "w") as f:
                    f.write(text)
                cpus.append(_cpu())
                if (not censused and rss / 1024 > _idle_mib and len(cpus) > 3
                        and cpus[-1] - cpus[-3] < 0.2 * _every):
                    censused = True
                    os.kill(os.getpid(), signal.SIGUSR2)

    threading.Thread(target=_watch, name="mallocstats", daemon=True).start()
