"""Central logs and grouped errors: every service's lines in one searchable store.

Docker's syslog driver sends each container's lines to the installation's collector (rsyslog, see
hafen/images/collector); the collector on the controller's node writes them to a spool directory, which
the controller ingests in batches (ingest.py) into the store (store.py: SQLite FTS5, or PostgreSQL's full
text search when the control plane's database is PostgreSQL), grouping error lines and tracebacks by
signature (groups.py).
"""
