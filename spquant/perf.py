"""Run-time performance settings for training on CPUs (measured in ``docs/performance.md``).

What is on by default needs nothing: ``LIF(backend='fused')`` (the hand-written backward) is the
default neuron backend. The remaining levers are process-wide, so they are opt-in:

* ``configure(fast=True)`` (or ``SPQUANT_FAST=1`` in the environment, applied by
  :func:`configure_from_env`): sets the torch intra-op thread count (``SPQUANT_THREADS`` or the
  ``threads`` argument; default: 1 thread if the machine is busy — load average above the number of
  cores — else all cores; under load 1 thread was 2-3x faster on a dual-core CPU).
* ``configure(compile=True)`` (or ``SPQUANT_COMPILE=1``): the fused LIF runs its time steps
  through ``torch.compile``d kernels (:func:`spquant.neuron.fused.compile_kernels`): same results, a much
  cheaper neuron, but compiling costs tens of seconds to minutes per process.
* spikes that convs and poolings save for backward are stored as ``bool`` by ``ConvBNLIF`` and
  ``SeqModule`` already; ``with compact_spikes():`` does the same for any other consumer.
* the tcmalloc allocator: it must be preloaded before Python starts, so either launch with
  ``LD_PRELOAD=$(python -m spquant.perf tcmalloc)`` or call :func:`reexec_with_tcmalloc` first
  thing in a launcher script (it re-executes the process with ``LD_PRELOAD`` set when the library
  is installed: Debian ``apt-get install libtcmalloc-minimal4``; does nothing otherwise).

Example::

    >>> from spquant import perf
    >>> s = perf.configure(fast=False)
    >>> sorted(s)
    ['compile', 'fast', 'tcmalloc', 'threads']
"""

from __future__ import annotations

import os
import sys

__all__ = [  # noqa: F822 (compact_spikes comes from __getattr__, so no torch at import)
    "compact_spikes",
    "configure",
    "configure_from_env",
    "tcmalloc_path",
    "tcmalloc_active",
    "reexec_with_tcmalloc",
    "suggested_threads",
]

_TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
)


def tcmalloc_path() -> str | None:
    """Path of an installed tcmalloc shared library, or None."""
    for p in _TCMALLOC_CANDIDATES:
        if os.path.exists(p):
            return p
    return None


def tcmalloc_active() -> bool:
    """Whether this process was started with tcmalloc preloaded."""
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def reexec_with_tcmalloc() -> None:
    """Re-execute the current Python process with tcmalloc preloaded, if installed and not already
    active (call it before doing any work). Set ``SPQUANT_TCMALLOC=0`` to disable."""
    if tcmalloc_active() or os.environ.get("SPQUANT_TCMALLOC", "1") == "0":
        return
    path = tcmalloc_path()
    if path is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = f"{path} {env['LD_PRELOAD']}".strip() if env.get("LD_PRELOAD") else path
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def suggested_threads() -> int:
    """All cores on an idle machine, 1 when the load average already exceeds the core count."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return 1 if load >= cores else cores


def __getattr__(name):  # torch-free import of this module (launchers re-exec before importing torch)
    if name == "compact_spikes":
        from spquant.neuron.fused import compact_spikes

        return compact_spikes
    raise AttributeError(name)


def configure(fast: bool = True, threads: int | None = None, compile: bool | None = None) -> dict:
    """Apply the fast settings (``fast=True``) and return what is in effect. ``compile``: switch the
    fused LIF's compiled kernels on or off (None: leave as is)."""
    import torch

    from spquant.neuron import fused

    if compile is not None:
        fused.compile_kernels(compile)

    if fast:
        n = threads or int(os.environ.get("SPQUANT_THREADS", "0")) or suggested_threads()
        torch.set_num_threads(max(1, n))
    elif threads:
        torch.set_num_threads(threads)
    return {
        "fast": bool(fast),
        "threads": torch.get_num_threads(),
        "tcmalloc": tcmalloc_active(),
        "compile": fused.kernels_compiled(),
    }


def configure_from_env() -> dict | None:
    """``configure(fast=True)`` if ``SPQUANT_FAST=1`` is set, compiled LIF kernels if
    ``SPQUANT_COMPILE=1``; else nothing (returns None)."""
    fast = os.environ.get("SPQUANT_FAST", "0") not in ("", "0")
    compile_ = os.environ.get("SPQUANT_COMPILE", "0") not in ("", "0")
    if fast or compile_:
        return configure(fast=fast, compile=True if compile_ else None)
    return None


if __name__ == "__main__":  # python -m spquant.perf tcmalloc -> prints the LD_PRELOAD value (or nothing)
    if sys.argv[1:] == ["tcmalloc"]:
        print(tcmalloc_path() or "")
    else:
        print(configure(fast=True))
