"""Pools: several specialists served by one Triton server (see docs/pools.md).

``fit`` decides which members a pool can hold (the ``Fits`` condition), ``lru`` which of
them are loaded at a moment (demand-driven residency); both are pure. ``repository``
talks to Triton's model repository API and ``residency`` is the shell that applies the
decisions to the servers of a pool.
"""
