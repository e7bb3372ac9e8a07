"""Backup logic without I/O: when a backup is due, which snapshots to forget, whether a restore matches.

Pure Python on purpose (no Django, no engine), so that the controller, the CLI and the tests share it.
"""
