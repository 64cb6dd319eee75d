"""Parse the classifier's JSON answer; a malformed answer becomes category None."""

import json

from promptflow.core import tool


@tool
def convert_to_dictionary(input_str: str) -> dict:
    text = input_str.strip()
    start, end = text.find("{"), text.rfind("}")
    try:
        value = json.loads(text[start : end + 1]) if start >= 0 else {}
    except json.JSONDecodeError:
        value = {}
    return {
        "category": str(value.get("category", "None")),
        "evidence": str(value.get("evidence", "None")),
    }
