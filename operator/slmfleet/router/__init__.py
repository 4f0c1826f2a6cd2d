"""The slmfleet router: an OpenAI-compatible gateway in front of Triton specialists.

Pure decisions (routing, acceptance, trace budgets, spend, circuit breaking) live in
their own modules with table tests; ``app`` and ``upstream`` are the thin I/O shell.
"""
