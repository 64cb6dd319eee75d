"""Line scores and aggregated metrics for support_triage."""

import re

_WORD = re.compile(r"[a-z0-9']+")


class TriageEvaluator:
    def __call__(
        self,
        ticket: str,
        category: str,
        priority: str,
        expected_category: str,
        expected_priority: str,
        summary: str = "",
    ) -> dict[str, float]:
        ticket_words = set(_WORD.findall(ticket.lower()))
        summary_words = _WORD.findall(summary.lower())
        grounded = (
            sum(1 for w in summary_words if w in ticket_words) / len(summary_words) if summary_words else 0.0
        )
        category_match = float(category.strip().lower() == expected_category.strip().lower())
        priority_match = float(priority.strip().lower() == expected_priority.strip().lower())
        return {  # per-line scores under the metric names: the report's intervals resample them
            "category_match": category_match,
            "priority_match": priority_match,
            "exact_match": category_match * priority_match,
            "groundedness": round(grounded, 4),
        }

    def __aggregate__(self, line_results: list[dict[str, float]]) -> dict[str, float]:
        n = len(line_results) or 1
        metrics = {
            key: round(sum(r.get(key, 0.0) for r in line_results) / n, 4)
            for key in ("category_match", "priority_match", "groundedness")
        }
        metrics["exact_match"] = round(
            sum(1 for r in line_results if r.get("category_match") and r.get("priority_match")) / n, 4
        )
        return metrics
