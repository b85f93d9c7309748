"""Remote runners: the `core.runners.Runner` port over an existing engine's API (Kubernetes Jobs, Docker)."""
