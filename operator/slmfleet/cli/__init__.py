"""The ``slmfleet`` command: run a fleet locally, or on a local control plane."""
