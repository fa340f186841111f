"""Check outputs against docs/results.schema.json (the documented schema of results.json and of
usseg stream's results.jsonl and summary.json)."""

import json
from pathlib import Path

import jsonschema

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results.schema.json").read_text())


def validate(doc, definition: str | None = None) -> None:
    """Raise jsonschema.ValidationError unless ``doc`` fits the schema (or one of its $defs)."""
    schema = SCHEMA if definition is None else {"$ref": f"#/$defs/{definition}", "$defs": SCHEMA["$defs"]}
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)
