"""Row hooks a spec may name (`process_row: tasks.data.hooks:<function>`): small pieces of code for rows that a
field mapping cannot express. Each maps one row (the kind's layout) to a row."""

from __future__ import annotations

from typing import Any


def collapse_whitespace(row: dict[str, Any]) -> dict[str, Any]:
    """Every run of whitespace (line breaks of a scraped article included) in the row's strings becomes one space."""

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return " ".join(value.split())
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return {k: (v if k == "id" else fix(v)) for k, v in row.items()}
