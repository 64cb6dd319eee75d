"""Prompt -> answer logic of the local model endpoint (a deterministic stand-in, not a real LLM).

Every answer is computed from the messages of the request alone; nothing is looked up in test
data. The first rule that applies wins:

1. few-shot classification: labelled examples in the prompt (``OUTPUT:``/``Label:``/... followed by a
   JSON object or a label, or user/assistant example turns) and a final unlabelled input; the answer
   is the output of the most similar example (TF-IDF cosine), so better examples really score better;
2. rating (``rate ... from 1 to 5``, ``score from 1 (very poor) to 5``, as LLM-judge evaluators ask):
   the share of the answer's words that the prompt's reference supports, mapped onto the asked
   scale. In a judge template with scored examples (azure-ai-evaluation's prompty files), the
   answer judged is the ``Response:``/``Answer:``/``Predicted answer:`` field that carries no score
   of its own, and its reference the ``Context:`` (else ``Ground truth``/``Correct answer:``, else
   ``Query:``/``Question:``/``Conversation history:``) field just before it. When the prompt asks
   for a JSON object with a ``score`` the answer is ``{"reason": ..., "score": n, "status": "completed"}``;
3. grounded question answering with a ``Question:`` line: the best-matching context sentence(s);
4. summarisation (``summarize``/``summary`` in the instructions): an extractive summary bounded by
   the length the prompt asks for (``100 words``, ``2 sentences``); when the instruction is in a
   system message this rule comes before 3 (a page to summarise may hold ``Question:`` lines);
5. question answering from a context and a final question ending with ``?``;
6. anything else: ``You said: <first sentence of the last user message>``.

Sampling parameters matter deterministically: with ``temperature > 0`` a choice seeded by the prompt,
the temperature, ``seed`` and the choice index may take the second-best class; ``max_tokens``
truncates (``finish_reason == "length"``); ``stop`` cuts the text.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
WORD_RE = re.compile(r"[a-z0-9]+")
SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
MARKER_RE = re.compile(
    r"^[ \t]*(?:output|label|category|class|sentiment|intent|answer)[ \t]*:[ \t]*", re.IGNORECASE | re.M
)
KEY_LINE_RE = re.compile(r"^[ \t]*([A-Za-z][\w ]{0,30}?)[ \t]*:")
SUMMARY_RE = re.compile(r"\bsummar(?:y|ies|ize|ise|izing|ising|ized|ised)\b", re.IGNORECASE)
WORD_LIMIT_RE = re.compile(r"\b(\d{1,4})\s*words?\b", re.IGNORECASE)
SENTENCE_LIMIT_RE = re.compile(
    r"\b(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|a single)\s+sentences?\b", re.IGNORECASE
)
QUESTION_MARKER_RE = re.compile(r"^[ \t]*(?:question|q)[ \t]*:[ \t]*", re.IGNORECASE | re.M)
CONTEXT_MARKER_RE = re.compile(
    r"^[ \t]*(?:context|contexts|documents?|sources?|passages?)[ \t]*:[ \t]*", re.IGNORECASE | re.M
)
RATING_RE = re.compile(
    r"\b(score|rating|rate|grade)\b[^\n]{0,120}?\b(\d{1,2})\s*(?:\([^)\n]{0,30}\)\s*)?"
    r"(?:to|-|\u2013|and|through)\s*(\d{1,2})\b",
    re.IGNORECASE,
)
ANSWER_MARKER_RE = re.compile(r"^[ \t]*(?:answer|response)[ \t]*:[ \t]*", re.IGNORECASE | re.M)
JUDGED_MARKER_RE = re.compile(
    r"^[ \t]*(?:response|answer|predicted[ _]answer|generated[ _]answer)[ \t]*:[ \t]*", re.IGNORECASE | re.M
)
# the reference fields of a judged answer, by preference: what grounds it, what it should say, what it answers
REFERENCE_MARKER_RES = tuple(
    re.compile(rf"^[ \t]*(?:{names})[ \t]*:[ \t]*", re.IGNORECASE | re.M)
    for names in (
        r"context|contexts|documents?",
        r"ground[ _]truth|correct[ _]answer|expected[ _]answer|reference",
        r"query|question|conversation[ _]history",
    )
)
# a score given to an example (``stars: 3``, ``Score: 4``, ``"score": 1``) marks it as labelled
EXAMPLE_SCORE_RE = re.compile(
    r"""(?:^[ \t]*(?:stars|score|rating)[ \t]*:[ \t]*\d|["']score["'][ \t]*:[ \t]*\d)""", re.I | re.M
)
JSON_SCORE_RE = re.compile(r"""\bjson\b[\s\S]*["']?score["']?\s*:""", re.IGNORECASE)
NEXT_FIELD_RE = re.compile(r"^[ \t]*[A-Za-z][\w ]{0,30}:", re.M)
NUMBER_WORDS = {
    "one": 1,
    "a single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_STOPWORD_TEXT = """a an and are as at be but by for from has have he her his how i if in into is it its of
on or our she so than that the their them then there these they this to was we were what when where which
who why will with you your do does did not no can could would should may might shall been being am"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
DEFAULT_SUMMARY_SENTENCES = 3
NO_ANSWER = "I cannot find the answer in the given context."

# The version of these rules: a digest of this module, so any change to it is a new version. The
# model endpoint reports it in its ``system_fingerprint``; the experiment runner's line cache is
# keyed on that, so answers cached before a change are not reused after it.
RESPONDER_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]

Messages = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Params:
    """The sampling parameters that change an answer (all hashable, for the cache)."""

    temperature: float = 0.0
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    json_mode: bool = False


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: str  # "stop" or "length"
    completion_tokens: int


@dataclass(frozen=True)
class Answer:
    task: str  # "classify", "qa", "summarize" or "echo"
    choices: tuple[Choice, ...]
    prompt_tokens: int


@dataclass(frozen=True)
class _Analysis:
    task: str
    candidates: tuple[str, ...]  # best first; more than one only for classification
    prompt_tokens: int
    digest: bytes


def count_tokens(text: str) -> int:
    """Approximate token count: words and punctuation marks."""
    return len(TOKEN_RE.findall(text))


def respond(messages: Messages, params: Params) -> Answer:
    """The deterministic answer to ``messages`` under ``params`` (cached per prompt and params)."""
    return _respond(messages, params)


@lru_cache(maxsize=4096)
def _respond(messages: Messages, params: Params) -> Answer:
    analysis = _analyse(messages)
    choices = []
    for index in range(max(1, params.n)):
        text = analysis.candidates[0]
        if len(analysis.candidates) > 1 and params.temperature > 0:
            chance = min(0.5, 0.2 * params.temperature)
            if _unit(analysis.digest, params.temperature, params.seed, index) < chance:
                text = analysis.candidates[1]
        if params.json_mode and not _is_json(text):
            text = json.dumps({"answer": text})
        choices.append(_finish(text, params))
    return Answer(task=analysis.task, choices=tuple(choices), prompt_tokens=analysis.prompt_tokens)


@lru_cache(maxsize=4096)
def _analyse(messages: Messages) -> _Analysis:
    prompt_tokens = 3 + sum(4 + count_tokens(content) for _, content in messages)
    digest = hashlib.blake2b(repr(messages).encode(), digest_size=16).digest()
    for task, solver in (
        ("classify", _classify),
        ("rate", _rate),
        ("summarize", _summarize_by_system),
        ("qa", _answer_marked_question),
        ("summarize", _summarize),
        ("qa", _answer_question),
        ("echo", _echo),
    ):
        candidates = solver(messages)
        if candidates:
            return _Analysis(task, tuple(candidates), prompt_tokens, digest)
    raise AssertionError("echo always answers")  # pragma: no cover


# --------------------------------------------------------------------------- sampling helpers


def _unit(digest: bytes, temperature: float, seed: int | None, index: int) -> float:
    key = digest + f"|{temperature!r}|{seed!r}|{index}".encode()
    value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return value / 2**64


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _finish(text: str, params: Params) -> Choice:
    for stop in params.stop:
        if stop and stop in text:
            text = text[: text.index(stop)]
    if params.max_tokens is not None:
        ends = [m.end() for m in TOKEN_RE.finditer(text)]
        if len(ends) > params.max_tokens:
            cut = text[: ends[params.max_tokens - 1]] if params.max_tokens > 0 else ""
            return Choice(cut, "length", params.max_tokens)
    return Choice(text, "stop", count_tokens(text))


# --------------------------------------------------------------------------- similarity


def _words(text: str) -> tuple[str, ...]:
    return _cached_words(text) if len(text) < 20_000 else _split_words(text)


@lru_cache(maxsize=16384)
def _cached_words(text: str) -> tuple[str, ...]:
    return _split_words(text)


def _split_words(text: str) -> tuple[str, ...]:
    return tuple(w for w in WORD_RE.findall(text.lower()) if w not in STOPWORDS)


class _Index:
    """TF-IDF vectors of a set of documents (example inputs or context sentences).

    The IDF comes from the documents alone, so the index is cached and reused by every request
    with the same examples; a query only needs its own vector. Similarities are cosines.
    """

    def __init__(self, docs: tuple[str, ...]) -> None:
        words = [_words(doc) for doc in docs]
        df: Counter[str] = Counter()
        for doc_words in words:
            df.update(set(doc_words))
        n = len(docs)
        self.idf = {w: math.log((n + 1) / (c + 1)) + 1 for w, c in df.items()}
        self.vectors = [self._vector(doc_words) for doc_words in words]

    def _vector(self, words: tuple[str, ...]) -> dict[str, float]:
        idf = self.idf
        vec = {w: (1 + math.log(c)) * idf[w] for w, c in Counter(words).items() if w in idf}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {w: v / norm for w, v in vec.items()}

    def similarities(self, query: str) -> list[float]:
        q = self._vector(_words(query))
        return [sum(v * doc.get(w, 0.0) for w, v in q.items()) for doc in self.vectors]


@lru_cache(maxsize=1024)
def _index(docs: tuple[str, ...]) -> _Index:
    return _Index(docs)


def _sentences(text: str) -> list[str]:
    seen: set[str] = set()
    out = []
    for raw in SENTENCE_SPLIT_RE.split(text):
        sentence = raw.strip()
        if sentence and _words(sentence) and sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


# --------------------------------------------------------------------------- 1. few-shot classification


def _classify(messages: Messages) -> list[str]:
    examples, query = _marked_examples("\n\n".join(c for _, c in messages))
    if not examples:
        examples, query = _turn_examples(messages)
    if not examples or not _words(query):
        return []
    similarities = _index(tuple(text for text, _ in examples)).similarities(query)
    # Rank distinct outputs by their best example similarity (1-nearest-neighbour), then by the
    # total similarity of their examples, then by how many examples carry them, then by order.
    scores: dict[str, tuple[float, float, int, int]] = {}
    shown: dict[str, str] = {}
    for position, ((_, output), sim) in enumerate(zip(examples, similarities, strict=True)):
        key = _canonical(output)
        best, total, count, first = scores.get(key, (0.0, 0.0, 0, -position))
        scores[key] = (max(best, sim), total + sim, count + 1, first)
        shown.setdefault(key, output)
    ranked = sorted(scores, key=lambda k: scores[k], reverse=True)
    return [shown[k] for k in ranked]


@lru_cache(maxsize=4096)
def _canonical(output: str) -> str:
    try:
        return json.dumps(json.loads(output), sort_keys=True)
    except ValueError:
        return output.strip().lower()


def _marked_examples(text: str) -> tuple[list[tuple[str, str]], str]:
    """Examples (input, output) and the final unlabelled input, from ``OUTPUT:``-style markers."""
    markers = list(MARKER_RE.finditer(text))
    if len(markers) < 2:
        return [], ""
    last = markers[-1]
    if _output_after(text, last.end())[0] is not None:
        return [], ""  # the input to classify must be the segment before a final, empty marker
    # The examples, up to the end of the last labelled output, are usually the same from request
    # to request (only the input to classify changes): their parse is cached.
    last_output, examples_end = _output_after(text, markers[-2].end())
    if last_output is None:
        return [], ""
    segments, outputs, position = _labelled_examples(text[:examples_end])
    if position != examples_end:
        return [], ""
    inputs = _trim_segments([*segments, text[position : last.start()]])
    examples = [(inputs[i], o) for i, o in enumerate(outputs) if o is not None]
    return examples, inputs[-1]


@lru_cache(maxsize=1024)
def _labelled_examples(text: str) -> tuple[tuple[str, ...], tuple[str | None, ...], int]:
    """The example segments and their outputs (None: unlabelled), and where the last one ends."""
    segments: list[str] = []
    outputs: list[str | None] = []
    position = 0
    for match in MARKER_RE.finditer(text):
        if match.start() < position:
            continue  # a marker inside the previous example's output
        output, end = _output_after(text, match.end())
        segments.append(text[position : match.start()])
        outputs.append(output)
        position = end
    return tuple(segments), tuple(outputs), position


_DECODER = json.JSONDecoder()


def _output_after(text: str, start: int) -> tuple[str | None, int]:
    """The labelled output after a marker ending at ``start``: a JSON object, else the rest of its line."""
    line_end = text.find("\n", start)
    line_end = len(text) if line_end == -1 else line_end
    after = start
    while after < len(text) and text[after].isspace():
        after += 1
    if text.startswith("{", after):
        try:
            end = _DECODER.raw_decode(text, after)[1]
            return text[after:end], end
        except ValueError:
            pass
    rest_of_line = text[start:line_end].strip()
    return (rest_of_line, line_end) if rest_of_line else (None, start)


def _trim_segments(segments: list[str]) -> list[str]:
    """Cut instructions off each segment so only the example's own input block is compared.

    When every segment holds the same ``Key:`` lines (``URL:``, ``Text content:``), a segment starts
    at its last line with the block's first key; otherwise it is the last paragraph.
    """
    keyed = [_line_keys(seg) for seg in segments]
    common = set.intersection(*({k for k in keys if k} for keys in keyed)) if keyed else set()
    if common:
        reference = keyed[1] if len(keyed) > 2 else keyed[0]
        first_key = next(k for k in reference if k in common)
        trimmed = []
        for seg, keys in zip(segments, keyed, strict=True):
            lines = seg.splitlines()
            start = max(i for i, k in enumerate(keys) if k == first_key)
            trimmed.append("\n".join(lines[start:]).strip())
        return trimmed
    return [re.split(r"\n[ \t]*\n", seg.strip())[-1] for seg in segments]


@lru_cache(maxsize=4096)
def _line_keys(segment: str) -> tuple[str | None, ...]:
    return tuple(_key(line) for line in segment.splitlines())


def _key(line: str) -> str | None:
    match = KEY_LINE_RE.match(line)
    return match.group(1).strip().lower() if match else None


def _turn_examples(messages: Messages) -> tuple[list[tuple[str, str]], str]:
    """Few-shot examples written as user/assistant turns, with the final user turn as the input."""
    if len(messages) < 3 or messages[-1][0] != "user":
        return [], ""
    examples = [
        (messages[i - 1][1], content)
        for i, (role, content) in enumerate(messages)
        if role == "assistant" and i > 0 and messages[i - 1][0] == "user"
    ]
    # Labels (short answers or JSON objects), not a chat history with free-text replies.
    labels = all(count_tokens(o) <= 8 or o.lstrip().startswith("{") for _, o in examples)
    return (examples, messages[-1][1]) if len(examples) >= 2 and labels else ([], "")


# --------------------------------------------------------------------------- 2./4. question answering


def _answer_marked_question(messages: Messages) -> list[str]:
    text = "\n\n".join(c for _, c in messages)
    questions = list(QUESTION_MARKER_RE.finditer(text))
    if not questions:
        return []
    last = questions[-1]
    question = text[last.end() :].split("\n", 1)[0].strip()
    before, after = text[: last.start()], text[last.end() + len(question) :]
    contexts = list(CONTEXT_MARKER_RE.finditer(before))
    context = before[contexts[-1].end() :] if contexts else before + "\n" + after
    return _grounded_answer(question, context)


def _answer_question(messages: Messages) -> list[str]:
    users = [c for role, c in messages if role == "user"]
    if not users:
        return []
    candidates = [s for s in _sentences(users[-1]) if s.endswith("?")]
    if not candidates:
        return []
    question = candidates[-1]
    context = "\n".join(c for _, c in messages).replace(question, " ")
    if len(_sentences(context)) < 2:
        return []
    return _grounded_answer(question, context)


def _grounded_answer(question: str, context: str) -> list[str]:
    sentences = _sentences(context)
    if not sentences or not _words(question):
        return []
    similarities = _index(tuple(sentences)).similarities(question)
    scored = sorted(((sim, -i) for i, sim in enumerate(similarities)), reverse=True)
    best_score, best = scored[0]
    if best_score <= 0:
        return [NO_ANSWER]
    picked = [-best]
    if len(scored) > 1 and scored[1][0] >= 0.8 * best_score:
        picked.append(-scored[1][1])
    return [" ".join(sentences[i] for i in sorted(picked))]


# --------------------------------------------------------------------------- 3. summarisation


def _summarize_by_system(messages: Messages) -> list[str]:
    """A summary asked for in a system message outranks ``Question:`` lines in the text to summarise."""
    return _summarize(messages, roles=("system",))


def _summarize(messages: Messages, roles: tuple[str, ...] = ("system", "user")) -> list[str]:
    instruction_index = next(
        (i for i, (role, c) in enumerate(messages) if role in roles and SUMMARY_RE.search(c)), None
    )
    if instruction_index is None:
        return []
    instruction = messages[instruction_index][1]
    others = [c for i, (role, c) in enumerate(messages) if i != instruction_index and role == "user"]
    if others and _words(" ".join(others)):
        source = "\n".join(others)
        directions = instruction
    else:
        lines = instruction.splitlines()
        first = next(i for i, line in enumerate(lines) if SUMMARY_RE.search(line))
        directions = lines[first]
        head, _, tail = lines[first].partition(":")
        rest = "\n".join(lines[first + 1 :])
        source = rest if _words(rest) else (tail if SUMMARY_RE.search(head) else "\n".join(lines[:first]))
    word_limit = _word_limit(directions)
    sentence_limit = _sentence_limit(directions)
    return [_extract(source, word_limit, sentence_limit)]


def _word_limit(directions: str) -> int | None:
    match = WORD_LIMIT_RE.search(directions)
    return max(1, int(match.group(1))) if match else None


def _sentence_limit(directions: str) -> int | None:
    match = SENTENCE_LIMIT_RE.search(directions)
    if not match:
        return None
    raw = match.group(1).lower()
    return max(1, int(raw)) if raw.isdigit() else NUMBER_WORDS[raw]


def _extract(source: str, word_limit: int | None, sentence_limit: int | None) -> str:
    sentences = _sentences(source)
    if not sentences:
        return ""
    if sentence_limit is None and word_limit is None:
        sentence_limit = DEFAULT_SUMMARY_SENTENCES
    freq = Counter(_words(source))
    top = max(freq.values(), default=1)

    def score(item: tuple[int, str]) -> float:
        position, sentence = item
        words = _words(sentence)
        value = sum(freq[w] / top for w in words) / math.sqrt(len(words) or 1)
        return value * (1.5 if position == 0 else 1.0)

    ranked = sorted(enumerate(sentences), key=lambda item: (-score(item), item[0]))
    chosen: list[int] = []
    used = 0
    for position, sentence in ranked:
        if sentence_limit is not None and len(chosen) >= sentence_limit:
            break
        length = len(sentence.split())
        if word_limit is not None and used + length > word_limit:
            if chosen:
                continue
            return " ".join(sentence.split()[:word_limit])
        chosen.append(position)
        used += length
    return " ".join(sentences[i] for i in sorted(chosen))


# --------------------------------------------------------------------------- rating (LLM-as-judge prompts)


def _rate(messages: Messages) -> list[str]:
    """``Rate ... from 1 to 5``: a score from how much of the answer the prompt's reference supports.

    The share of the answer's content words found in the reference, mapped linearly onto the asked
    scale. Answer and reference: the judged field of a judge template (:func:`_judged_fields`), else
    the text after the last ``Answer:``/``Response:`` line against the rest of the prompt, else the
    last user message against the messages before it.
    """
    scale = None
    for role, content in messages:
        match = RATING_RE.search(content)
        if match and (role == "system" or match.group(1).lower() != "rate"):
            scale = int(match.group(2)), int(match.group(3))
            break
    if scale is None or not 0 <= scale[0] < scale[1] <= 10:
        return []
    text = "\n\n".join(c for _, c in messages)
    judged = _judged_fields(text)
    answers = list(ANSWER_MARKER_RE.finditer(text))
    if judged is not None:
        answer, reference = judged
    elif answers:
        start = answers[-1].end()
        following = NEXT_FIELD_RE.search(text, start)
        answer = text[start : following.start() if following else len(text)]
        reference = text[: answers[-1].start()] + (text[following.start() :] if following else "")
    else:
        users = [c for role, c in messages if role == "user"]
        if not users:
            return []
        answer = users[-1]
        reference = "\n".join(c for _, c in messages[:-1])
    answer_words = set(_words(answer))
    supported = answer_words & set(_words(reference))
    coverage = len(supported) / len(answer_words) if answer_words else 0.0
    score = scale[0] + round(coverage * (scale[1] - scale[0]))
    if not JSON_SCORE_RE.search(text):
        return [str(score)]
    reason = (
        f"{len(supported)} of {len(answer_words)} content words of the response are supported by the "
        f"reference ({coverage:.0%}), which maps to {score} on the {scale[0]}-{scale[1]} scale."
    )
    return [json.dumps({"reason": reason, "score": score, "status": "completed"})]


def _field_value(text: str, start: int) -> str:
    """A ``Key: value`` field's value: up to the next field line or blank line."""
    end = len(text)
    for pattern in (NEXT_FIELD_RE, re.compile(r"\n[ \t]*\n")):
        found = pattern.search(text, start)
        if found is not None and found.start() < end:
            end = found.start()
    return text[start:end]


def _judged_fields(text: str) -> tuple[str, str] | None:
    """(answer, reference) of a judge template: the one answer field no score follows (the examples'
    answers are followed by their scores before the next answer field) and its reference field."""
    markers = list(JUDGED_MARKER_RE.finditer(text))
    if not markers:
        return None
    unlabelled = []
    for i, marker in enumerate(markers):
        following = markers[i + 1].start() if i + 1 < len(markers) else len(text)
        if not EXAMPLE_SCORE_RE.search(text, marker.end(), following):
            unlabelled.append(marker)
    if not unlabelled:
        return None
    judged = unlabelled[-1]
    answer = _field_value(text, judged.end())
    for pattern in REFERENCE_MARKER_RES:
        found = list(pattern.finditer(text, 0, judged.start()))
        if found:
            reference = _field_value(text, found[-1].end())
            if _words(reference):
                return answer, reference
    return None


# --------------------------------------------------------------------------- 5. anything else


def _echo(messages: Messages) -> list[str]:
    users = [c for role, c in messages if role == "user"] or [c for _, c in messages]
    last = next((c for c in reversed(users) if c.strip()), "")
    sentences = _sentences(last)
    if not sentences:
        return ["(empty prompt)"]
    words = sentences[0].split()
    reply = " ".join(words[:30]) + (" ..." if len(words) > 30 else "")
    return [f"You said: {reply}"]
