"""The control plane's web server: health now; the UI and API come later."""
