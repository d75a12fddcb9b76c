"""Burning a fixed amount of CPU: the "handler burns 10 ms of CPU per call" benchmark scenario.

Shared by the operatord handler (`bench/cpu_widgets.py`) and the kopf twin
(`bench/kopf_widgets.py`) so both burn exactly the same work per handler call.
"""

from __future__ import annotations

import time


def burn_cpu(seconds: float) -> None:
    """Spin until this thread has used ``seconds`` of CPU time (not wall time: a thread that
    waits for the GIL or a core does not count, so every call costs the same CPU)."""
    if seconds <= 0:
        return
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        for i in range(200):
            x += i * i
