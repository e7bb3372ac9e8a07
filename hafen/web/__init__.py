"""The control plane's web UI: server-rendered pages with a little htmx, over the service layer."""
