"""The edge: one shared reverse proxy that maps domains to instances."""
