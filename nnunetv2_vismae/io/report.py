"""What every report writer shares: CSV text, Markdown tables, and a report's files written atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from nnunetv2_vismae.io.atomic import write_bytes_atomic


def csv_text(header: list, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(header: list, rows) -> list[str]:
    """The table's lines, then an empty line."""

    def row(cells) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return [row(header), "|" + "---|" * len(header), *(row(r) for r in rows), ""]


def write_files(files: dict[Path, bytes]) -> list[Path]:
    """Each file written atomically (a reader never sees half a report); returns their paths."""
    for path, data in files.items():
        write_bytes_atomic(path, data)
    return list(files)
