"""The cyclic garbage collector, set for a long-running stream worker.

By default CPython collects its youngest generation every 700 net allocations of tracked
objects, and its older ones after 10 of those each; the oldest traverses the whole heap, which
in the worker holds the imports, the tokenizer and every entity's cached state. An event
allocates thousands of short-lived objects (records, alerts, Faust's event wrappers), so the
default collector took 9 % of the CPU of an in-process run of the full preset.

What the worker has built when it is ready lives until it stops: it is frozen out of every
later collection. The youngest generation is collected 70 times less often, the older ones
rarely: the cycles the stream makes are still reclaimed, by the same collector, later.
One worker on the full preset (25,793 events), four runs each way, alternated: 12 % less CPU
(the median of the paired ratios), the same peak memory (885-896 MiB).
"""

from __future__ import annotations

import gc

# (youngest, middle, oldest): allocations between young collections, then young collections
# per middle one and middle ones per full one. A full collection also waits, as CPython's
# own rule, until a quarter of the heap is new since the last one.
STREAM_THRESHOLDS = (50_000, 50, 100)


def settle_for_streaming() -> None:
    """Call once the worker is built: what exists now is kept out of later collections."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*STREAM_THRESHOLDS)
