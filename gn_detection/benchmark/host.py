"""Facts and settings of the host a benchmark runs on: the CPU's name and cache,
glibc's allocator setting, the load other processes put on the machine, page
faults and resident memory (Linux)."""

import ctypes
import functools
import os
import platform
import resource
import time

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
# Environment variables through which glibc's allocator can be set before a process starts.
MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
# Other processes' load (cores) above which CPU times are inflated and ratios unreliable.
BUSY_LOAD = 0.25


def apply_allocator(setting: str) -> str:
    """Sets glibc malloc for `setting` ("tuned" or "default"); returns a one-line description.

    glibc serves every allocation above 32 MB with a fresh mmap, so a large output
    page-faults on first touch and an op waits on the kernel zeroing pages. "tuned"
    calls mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1) so freed memory is reused
    (and stays with the process); "default" leaves glibc as a plain process has it.
    """
    if setting not in ("tuned", "default"):
        raise ValueError(f"allocator setting must be 'tuned' or 'default', got {setting!r}")
    overrides = [f"{name}={os.environ[name]}" for name in MALLOC_ENV if name in os.environ]
    if setting == "default":
        if overrides:
            return "default glibc malloc, BUT environment overrides are set: " + " ".join(overrides)
        return "default glibc malloc (allocations > 32 MB are fresh mmaps)"
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1):
        raise SystemExit("mallopt failed: the tuned allocator setting needs glibc")
    return "tuned glibc malloc: mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1)"


def environment_without_allocator_overrides() -> dict:
    """os.environ minus MALLOC_ENV, for a child process that sets its own allocator."""
    return {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@functools.cache
def last_level_cache_bytes() -> int:
    """Size of the CPU's last-level cache (Linux sysfs), 32 MiB when unknown; read once."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    sizes = []
    for index in range(8):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size") as handle:
                text = handle.read().strip()
        except OSError:
            break
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes, default=32 << 20)


def cpu_snapshot():
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its
    finished children, wall time)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    own = os.times()
    own_seconds = own.user + own.system + own.children_user + own.children_system
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK"), own_seconds, time.monotonic()


def other_load(before, after) -> float:
    """Cores kept busy by other processes between two cpu_snapshot()s, on average."""
    busy, own, wall = (a - b for a, b in zip(after, before))
    return max(0.0, (busy - own) / max(wall, 1e-9))


def contention_note(load: float) -> str:
    """Other processes make a 2-thread op wait for a scheduler time slice (~10 ms)
    at every parallel region, which swamps the differences measured here."""
    note = f"other processes kept {load:.2f} of {os.cpu_count()} cores busy during the run"
    if load > BUSY_LOAD:
        note = "WARNING: " + note + ": times are inflated and ratios unreliable; rerun on an idle machine"
    return note


def page_fault_bytes() -> int:
    """Bytes of pages this process has touched for the first time so far (minor faults)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt * resource.getpagesize()


def process_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status ("VmRSS", "VmHWM", ...) in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise KeyError(f"/proc/self/status has no field {field!r}")
