"""Triage a support ticket: category and priority by a few-shot prompt, plus a short summary.

The connection may be an OpenAI or an Azure OpenAI connection (chosen per environment).
"""

import json
from typing import Any

from promptflow.connections import AzureOpenAIConnection, OpenAIConnection

CATEGORIES = ("billing", "technical", "account", "shipping")
PRIORITIES = ("low", "medium", "high")

# Few-shot examples: written for the prompt, not taken from the evaluation datasets (data/*.jsonl)
# nor near copies of their lines, so the evaluation does not score lines the flow was shown (the
# contamination check, docs/experiments.md, keeps it that way).
BASIC_EXAMPLES = [
    ("Your invoice charged my card for a plan I cancelled, please refund the payment", "billing", "high"),
    ("The app shows an error and crashes when the page loads after the update", "technical", "high"),
    ("Locked out of my account, the login password is rejected", "account", "high"),
    ("The courier lost my parcel and tracking shows no delivery", "shipping", "high"),
]
EXTENDED_EXAMPLES = [
    *BASIC_EXAMPLES,
    ("Where can I download receipts and the invoice for each billing period", "billing", "low"),
    ("Why did the price of my subscription payment go up", "billing", "medium"),
    ("Settings screen is slow and the export button freezes in the browser", "technical", "medium"),
    ("Charts on the dashboard render blank in the night theme", "technical", "low"),
    ("Can I rename my profile and pick another username", "account", "low"),
    ("Close my account and erase the stored profile information", "account", "medium"),
    ("Can the package be shipped with express delivery abroad", "shipping", "low"),
    ("The delivery came late and the box was damaged", "shipping", "medium"),
]


class Triage:
    def __init__(
        self,
        connection: OpenAIConnection,
        model: str = "gpt-35-turbo",
        temperature: float = 0.0,
        max_tokens: int = 96,
        examples: str = "basic",
    ) -> None:
        if examples not in ("basic", "extended"):
            raise ValueError(f"examples must be 'basic' or 'extended', not {examples!r}")
        self.model = model
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.examples = EXTENDED_EXAMPLES if examples == "extended" else BASIC_EXAMPLES
        self.client = _client(connection)

    def _chat(self, system: str, user: str) -> str:
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
        return response.choices[0].message.content or ""

    def __call__(self, ticket: str) -> dict[str, str]:
        shots = "\n\n".join(
            f'Ticket: {text}\nOUTPUT:\n{{"category": "{cat}", "priority": "{prio}"}}'
            for text, cat, prio in self.examples
        )
        answer = self._chat(
            "Classify the support ticket. category is one of "
            f"{', '.join(CATEGORIES)}; priority is one of {', '.join(PRIORITIES)}. "
            'Answer with JSON {"category": "...", "priority": "..."}.',
            f"{shots}\n\nTicket: {ticket}\nOUTPUT:\n",
        )
        parsed = _parse(answer)
        summary = self._chat(
            "Summarize the following text in one sentence. Use only words from the text.",
            ticket,
        )
        return {
            "category": parsed.get("category", "unknown"),
            "priority": parsed.get("priority", "unknown"),
            "summary": summary.strip(),
        }


def _client(connection: Any) -> Any:
    from openai import AzureOpenAI, OpenAI

    if isinstance(connection, AzureOpenAIConnection):
        return AzureOpenAI(
            api_key=connection.api_key,
            azure_endpoint=connection.api_base,
            api_version=connection.api_version or "2024-02-01",
            timeout=30,
            max_retries=2,
        )
    return OpenAI(api_key=connection.api_key, base_url=connection.base_url, timeout=30, max_retries=2)


def _parse(text: str) -> dict[str, str]:
    start, end = text.find("{"), text.rfind("}")
    try:
        value = json.loads(text[start : end + 1]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}
    return {k: str(v).lower() for k, v in value.items() if k in ("category", "priority")}
