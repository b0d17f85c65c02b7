"""The operator assets against the real tools: Prometheus, promtool, the manifests."""
