"""Peak memory of this process, the way a CPU run can report it honestly."""
from __future__ import annotations

import resource


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    """This address space's peak RSS (VmHWM). Why not ru_maxrss: Linux carries it over execve from the
    process that spawned us, so a child of a large parent would report the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # not Linux: the best there is


def reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS (Linux >= 4.0), so earlier peaks (imports, the previous trial
    of a reused Ray worker) do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then the peak since the process started counts
