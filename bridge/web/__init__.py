"""The status page, /healthz, /metrics and the operator API."""
