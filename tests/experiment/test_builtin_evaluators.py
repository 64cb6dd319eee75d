"""azure-ai-evaluation's built-in evaluators by name (issue 13.4): validation, the local judge, a real run.

The judge is the local model endpoint: its answer to a judge template is computed from the
template's content (release/local_env/responder.py), so a relevant response scores higher.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from release.cli import main
from release.experiment import builtin_evaluators
from release.local_env.responder import Params, respond

# -- the local judge (pure functions) -------------------------------------------------------------

JUDGE = """\
Judge how relevant the RESPONSE is to the QUERY. Output a JSON object with "reason" and an integer
score from 1 (irrelevant) to 5 (fully relevant).

QUERY: Which river flows through Lyon?
RESPONSE: Bananas are rich in potassium.
Expected output: {{"reason": "off topic", "score": 1}}

QUERY: {query}
RESPONSE: {response}

QUERY: Where is the Louvre?
RESPONSE: The Louvre is in Paris on the right bank of the Seine.
Expected output: {{"reason": "answers the query", "score": 5}}
"""


def _judge(query: str, response: str) -> dict[str, object]:
    prompt = JUDGE.format(query=query, response=response)
    answer = respond((("system", "You are an impartial judge."), ("user", prompt)), Params(json_mode=True))
    assert answer.task == "rate"
    result: dict[str, object] = json.loads(answer.choices[0].text)
    return result


def test_the_judged_field_is_the_one_without_a_score_and_its_support_sets_the_score() -> None:
    query = "Which ferry pier serves Ostrand from Velmora harbour?"
    relevant = _judge(query, "The ferry pier that serves Ostrand from Velmora harbour.")
    partial = _judge(query, "Ostrand ferries are popular with tourists in summer.")
    off_topic = _judge(query, "Photosynthesis converts light into sugar.")
    assert relevant["score"] == 5 and off_topic["score"] == 1  # not the examples' 1 and 5
    assert 1 < partial["score"] < 5  # type: ignore[operator]
    assert relevant["status"] == "completed" and "content words" in str(relevant["reason"])


def test_without_a_json_request_the_judge_answers_the_bare_number() -> None:
    prompt = (
        "Give a score for the answer's similarity to the correct answer from 1 to 5.\n\n"
        "correct answer: The museum opens at nine on weekdays.\n"
        "predicted answer: On weekdays the museum opens at nine.\n"
    )
    assert respond((("user", prompt),), Params()).choices[0].text == "5"


# -- validation before any line runs --------------------------------------------------------------

FLOW = """\
inputs:
  question: {type: string}
outputs:
  answer: {type: string, reference: "${answer.output}"}
nodes:
- name: answer
  type: custom_llm
  source: {type: package_with_prompt, tool: promptflow.tools.llm.llm, path: answer.jinja2}
  inputs:
    connection: local_openai
    api: chat
    deployment_name: gpt-35-turbo
    temperature: 0.0
    question: ${inputs.question}
"""

PROMPT = """\
# system:
Answer the question from the notes in one sentence.

# user:
Notes: The harbour of Velmora opens at six. Ferries to Ostrand leave every hour from pier two.
The lighthouse of Velmora was built in 1887.
Question: {{question}}
"""

ROWS = [
    {"question": "When does the harbour of Velmora open?", "truth": "The harbour of Velmora opens at six."},
    {
        "question": "Where do the ferries to Ostrand leave from?",
        "truth": "Ferries to Ostrand leave from pier two.",
    },
    {
        "question": "When was the lighthouse of Velmora built?",
        "truth": "The lighthouse of Velmora was built in 1887.",
    },
]

EVALUATORS = """\
evaluators:
- name: answer_f1
  builtin: F1ScoreEvaluator
  datasets:
  - name: qa_f1
    reference: qa
    source: qa.jsonl
    mappings:
      response: "${run.outputs.answer}"
      ground_truth: "${data.truth}"
- name: answer_relevance
  builtin: relevance
  judge: {connection: local_openai, model: gpt-35-turbo}
  datasets:
  - name: qa_relevance
    reference: qa
    source: qa.jsonl
    mappings:
      query: "${data.question}"
      response: "${run.outputs.answer}"
"""


def _case(root: Path, evaluators: str = EVALUATORS) -> Path:
    flow = root / "flow"
    flow.mkdir(parents=True, exist_ok=True)
    (flow / "flow.dag.yaml").write_text(FLOW)
    (flow / "answer.jinja2").write_text(PROMPT)
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    path = root / "experiment.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: builtin_eval
            flow: flow
            connections:
            - name: local_openai
              connection_type: OpenAIConnection
            datasets:
            - name: qa
              source: qa.jsonl
              mappings:
                question: "${data.question}"
            hyperparameters:
              max_tokens: [1, 200]
            primary_metric: f1_score
            gates:
              # the notes in the prompt are the flow's knowledge: the truths quote them on purpose
              allow_contamination: true
              contamination_reason: answers are grounded in the notes the prompt carries
            """
        )
        + evaluators
    )
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("builtin: relevance", "builtin: wisdom"), "evaluators[1].builtin: 'wisdom' is not a supported"),
        (("  judge: {connection: local_openai, model: gpt-35-turbo}\n", ""), "needs a judge model"),
        (('      ground_truth: "${data.truth}"\n', ""), "F1ScoreEvaluator needs ground_truth"),
        (("builtin: F1ScoreEvaluator", "builtin: F1ScoreEvaluator\n  flow: flow"), "not both or neither"),
        (("builtin: F1ScoreEvaluator", "builtin: RougeScoreEvaluator"), "init.rouge_type"),
    ],
)
def test_bad_builtin_entries_fail_before_any_run(exp, tmp_path: Path, change, expected: str, capsys) -> None:  # type: ignore[no-untyped-def]
    path = _case(tmp_path, EVALUATORS.replace(*change))
    before = exp.services.completions()
    code = main(exp.args("evaluate", "builtin_eval", "--experiment", str(path)))
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and "experiment.yaml" in err
    assert exp.services.completions() == before  # nothing ran


def test_nltk_evaluators_are_refused_offline_unless_their_data_is_installed() -> None:
    missing = builtin_evaluators.nltk_missing()
    if not missing:
        pytest.skip("NLTK data is installed here: BLEU/GLEU/METEOR are allowed")
    with pytest.raises(Exception, match="needs NLTK data that is not installed") as caught:
        builtin_evaluators.check("bleu_score", {}, None, "experiment.yaml: evaluators[0]")
    assert "F1ScoreEvaluator" in str(caught.value)  # the fix names an offline alternative


# -- a real evaluation --------------------------------------------------------------------------


def test_evaluate_runs_a_lexical_and_an_ai_judged_builtin_evaluator(exp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _case(tmp_path)
    before = exp.services.completions()
    code = main(exp.args("evaluate", "builtin_eval", "--experiment", str(path)))
    assert code == 0
    report = next((exp.reports / "builtin_eval").glob("*/metrics.json"))
    runs = {r["params"]["max_tokens"]: r for r in json.loads(report.read_text())["runs"]}
    full, cut = runs[200]["metrics"], runs[1]["metrics"]
    # F1 against the ground truth: the one-token answers ("The") share almost nothing with it
    assert full["f1_score"] > 0.6 > cut["f1_score"]
    # the judge (local endpoint) scores relevance 1-5 from the answer's overlap with the question
    assert 1 <= cut["relevance"] < full["relevance"] <= 5
    assert set(runs[200]["evaluators"]) == {"answer_f1", "answer_relevance"}
    # 2 variants x 3 lines of the flow, plus one judge call per evaluated line
    assert exp.services.completions() - before == 2 * 3 + 2 * 3
    lines = (report.parent / "evaluations" / "answer_relevance" / "qa").glob("*/outputs.jsonl")
    scored = [json.loads(x) for f in lines for x in f.read_text().splitlines()]
    assert len(scored) == 6 and all(1 <= s["outputs"]["relevance"] <= 5 for s in scored)
    assert all("content words" in s["outputs"]["relevance_reason"] for s in scored)
    # the judge's key (the fixture's canary) is in no report file
    for path in report.parent.rglob("*"):
        if path.is_file():
            assert exp.services.api_key not in path.read_text(errors="replace"), path
