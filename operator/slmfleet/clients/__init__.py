"""Clients: the only modules that talk to the outside world (the Kubernetes API)."""
