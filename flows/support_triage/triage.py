"""Triage a support ticket: category and priority by a few-shot prompt, plus a short summary.

The connection may be an OpenAI or an Azure OpenAI connection (chosen per environment).
"""

import json
from typing import Any

from promptflow.connections import AzureOpenAIConnection, OpenAIConnection

CATEGORIES = ("billing", "technical", "account", "shipping")
PRIORITIES = ("low", "medium", "high")

BASIC_EXAMPLES = [
    ("My credit card was billed the wrong amount for the plan", "billing", "medium"),
    ("The application shows an error and crashes on start", "technical", "high"),
    ("I cannot log in to my account, password reset does not work", "account", "high"),
    ("Where is my order? The delivery is late", "shipping", "medium"),
]
EXTENDED_EXAMPLES = [
    *BASIC_EXAMPLES,
    ("Could I get a receipt or invoice copy for last month", "billing", "low"),
    ("A small layout glitch in the report page colours", "technical", "low"),
    ("How can I update the email on my profile or add a user", "account", "low"),
    ("Do you deliver to other countries, which courier ships it", "shipping", "low"),
    ("Payment failed and I was charged twice, need a refund now", "billing", "high"),
    ("The parcel was never received although tracking says delivered", "shipping", "high"),
    ("Nothing works, the service is down for the whole team", "technical", "high"),
    ("Delete my account and my personal data please", "account", "medium"),
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
