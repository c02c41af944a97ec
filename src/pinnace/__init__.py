"""pinnace: a container orchestrator that speaks the Kubernetes API."""

__version__ = "0.1.0"
KUBERNETES_VERSION = (1, 32, 0)

