"""Fetch a web page and return its visible text (scripts and styles removed)."""

from html.parser import HTMLParser

import requests
from promptflow.core import tool

MAX_CHARS = 2000


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data.strip())


@tool
def fetch_text_content_from_url(url: str) -> str:
    headers = {"User-Agent": "genaiops-web-classification/1.0"}
    try:
        response = requests.get(url, headers=headers, timeout=10)
    except requests.RequestException as exc:
        return f"No available content: {type(exc).__name__}"
    if response.status_code != 200:
        return f"No available content: HTTP {response.status_code}"
    parser = _Text()
    parser.feed(response.text)
    return " ".join(parser.parts)[:MAX_CHARS]
