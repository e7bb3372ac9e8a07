"""Metrics, charts and alerts: Prometheus, Alertmanager and the exporters hafen runs (see README)."""
