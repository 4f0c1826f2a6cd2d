"""Pure renderers: API objects in, Kubernetes objects and Triton configuration out."""
