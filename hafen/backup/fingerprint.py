"""Whether a restore brought back what the backup held.

A fingerprint is taken when a backup is made and again after a test restore:

    {"tables": {"motions_motion": 12, ...},        # rows per table; None: the table is missing
     "schema": "motions.0042",                     # e.g. the latest migration applied
     "volumes": {"media": {"files": 3, "bytes": 12345, "sha256": "<hex>"}}}
"""

from typing import Any

_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def human_bytes(n: int) -> str:
    """Base 1024 with the customary short units: 12345 -> "12.1 KB", 2**30 -> "1.0 GB", 512 -> "512 B"."""
    if n < 0:
        raise ValueError(f"a size cannot be negative: {n}")
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS[1:]:
        value /= 1024
        if round(value, 1) < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _files(volume: dict[str, Any]) -> str:
    files, size = volume.get("files"), volume.get("bytes")
    files_text = "? files" if files is None else _count(files, "file")
    return f"{files_text} ({'? bytes' if size is None else human_bytes(size)})"


def _quoted(value: object) -> str:
    return "nothing" if value is None else f'"{value}"'



def compare(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """The differences between a backup's fingerprint and a restore's, one line each; empty when equal.

    Only what the backup holds is checked: tables or volumes only in `actual` are ignored, and a key
    missing from `actual` is missing after the restore (a table missing in both is no difference).
    """
    differences = []
    restored_tables = actual.get("tables") or {}
    for table, rows in sorted((expected.get("tables") or {}).items()):
        got = restored_tables.get(table)
        if rows is None and got is None:
            continue
        if got is None:
            differences.append(f"table {table}: missing after the restore")
        elif rows is None:
            differences.append(f"table {table}: missing in the backup, {got} restored")
        elif rows != got:
            differences.append(f"table {table}: {_count(rows, 'row')} in the backup, {got} restored")

    if "schema" in expected:
        want, got = expected["schema"], actual.get("schema")
        if got is None and want is not None:
            differences.append("schema: missing after the restore")
        elif want != got:
            differences.append(f"schema: backup at {_quoted(want)}, restored {_quoted(got)}")

    restored_volumes = actual.get("volumes") or {}
    for name, volume in sorted((expected.get("volumes") or {}).items()):
        got = restored_volumes.get(name)
        if got is None:
            differences.append(f"volume {name}: missing after the restore")
        elif (volume["files"], volume["bytes"]) != (got.get("files"), got.get("bytes")):
            differences.append(f"volume {name}: {_files(volume)} in the backup, {_files(got)} restored")
        elif volume.get("sha256") != got.get("sha256"):
            differences.append(f"volume {name}: same number and size of files, different content")
    return differences
