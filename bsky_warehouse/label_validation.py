"""A model's answer checked against the instrument and turned into label rows, or refused with a reason.

Answers are validated strictly and never repaired: an answer that is not valid JSON, breaks the schema or
the codebook's rules (ideology only on sociopolitical posts, always on them), or labels other posts than
asked, is an `AnswerError` with a stable reason string. The reasons are what `llm_labels.reason` records,
so they are a vocabulary the analysis can count on; the backends decide what to do about a refusal (re-ask
a minibatch one post at a time, re-ask one post a bounded number of times, then record it as `failed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jsonschema
import orjson

from bsky_warehouse.instrument import SCHEMA
from bsky_warehouse.records import IDEOLOGIES, LabelResult

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

REASON_INVALID_JSON = "invalid_json"
REASON_SCHEMA_VIOLATION = "schema_violation"
REASON_UNKNOWN_LABEL = "unknown_label"
REASON_IDEOLOGY_ON_NON_SOCIOPOLITICAL = "ideology_on_non_sociopolitical"
REASON_MISSING_IDEOLOGY = "missing_ideology"
REASON_ID_MISMATCH = "id_mismatch"
REASON_REFUSAL = "refusal"
REASON_TRUNCATED = "truncated"
REASON_API_ERROR = "api_error"
REASON_EMPTY_TEXT = "empty_text"


class AnswerError(ValueError):
    """A model answer we refuse to use; `reason` is one of the REASON_* strings above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Label(NamedTuple):
    """One validated answer for one post."""

    is_sociopolitical: bool
    political_ideology: str | None
    rationale: str

    def result(self, uri: str) -> LabelResult:
        return LabelResult(
            uri=uri,
            status="ok",
            is_sociopolitical=self.is_sociopolitical,
            political_ideology=self.political_ideology,
            rationale=self.rationale,
        )


def _unknown_label(data: Any) -> str | None:
    """The first ideology string outside IDEOLOGIES, checked before the schema so that the model
    inventing a category is told apart from other schema breaches."""
    if not isinstance(data, Mapping) or not isinstance(data.get("labels"), list):
        return None
    for item in data["labels"]:
        if isinstance(item, Mapping):
            value = item.get("political_ideology")
            if isinstance(value, str) and value not in IDEOLOGIES:
                return value
    return None


def parse_answer(content: str | bytes, ids: Sequence[str]) -> dict[str, Label]:
    """Validate one answer for the posts `ids` and return their labels keyed by id.

    Raises AnswerError (never repairs, never guesses): `invalid_json`, `unknown_label`,
    `schema_violation`, `id_mismatch` (count, duplicates or ids differ from those asked),
    `ideology_on_non_sociopolitical`, `missing_ideology`.
    """
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise AnswerError(REASON_INVALID_JSON, str(exc)) from None
    unknown = _unknown_label(data)
    if unknown is not None:
        raise AnswerError(REASON_UNKNOWN_LABEL, f"political_ideology {unknown!r}")
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise AnswerError(REASON_SCHEMA_VIOLATION, f"{where or '<root>'}: {error.message}")
    items = data["labels"]
    got = [item["id"] for item in items]
    if len(got) != len(ids) or set(got) != set(ids) or len(set(got)) != len(got):
        raise AnswerError(REASON_ID_MISMATCH, f"asked for {list(ids)}, got {got}")
    labels: dict[str, Label] = {}
    for item in items:
        social = item["is_sociopolitical"]
        ideology = item["political_ideology"]
        if not social and ideology is not None:
            raise AnswerError(REASON_IDEOLOGY_ON_NON_SOCIOPOLITICAL, f"id {item['id']}: {ideology!r}")
        if social and ideology is None:
            raise AnswerError(REASON_MISSING_IDEOLOGY, f"id {item['id']}")
        labels[item["id"]] = Label(social, ideology, item["rationale"].strip())
    return labels


def parse_completion(body: bytes | str | Mapping[str, Any]) -> tuple[str, dict[str, int]]:
    """(content, usage) from a chat.completion body.

    Raises AnswerError `refusal` / `truncated` for answers the model gave but we cannot use, and
    ValueError when the body is not a chat completion at all (a proxy or server fault: retried).
    """
    data = body if isinstance(body, Mapping) else orjson.loads(body)
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("response is not a chat.completion") from None
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
    tokens = {k: int(v) for k, v in usage.items() if k.endswith("_tokens") and isinstance(v, int)}
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, str):
        refusal = message.get("refusal") if isinstance(message, Mapping) else None
        if refusal:
            raise AnswerError(REASON_REFUSAL, str(refusal)[:200])
        raise ValueError("chat.completion has no message content")
    if choice.get("finish_reason") == "length":
        raise AnswerError(REASON_TRUNCATED, "max_tokens reached")
    return content, tokens
