"""hafen: many isolated instances of a containerised web app on Docker Swarm."""

__version__ = "0.1.0"
