"""The built-in autoscaler: observe (``signals``, ``scrape``) -> decide (``decide``, pure)
-> act (``apply``: the SLMSpecialist scale subresource, status, Events).

See docs/autoscaling.md for the signals, the decision rule and the fields.
"""
