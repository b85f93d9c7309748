"""Remote runners: the `core.runners.Runner` port over an existing engine's API (Kubernetes Jobs, Docker or
Podman containers), each speaking its engine's API through its maintained client library."""
