"""Rich Interactions: the ``identity_intake`` and ``choices`` kinds.

The model raises an interaction by calling a server-registered tool
(``request_identity_intake`` or ``request_choices``). A session that declared
the kind's capability at create gets ``interaction_required`` and a parked turn;
``submit_interaction`` resumes it with validated values. A session without the
capability never parks: the tool answers at once and tells the model to ask in
conversation instead.

This module holds the kinds' shapes and validators; the park itself lives in
:mod:`smooth_nb.server.turns`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: Summary message of every ``interaction_invalid`` event.
INVALID_SUMMARY = "Some fields need attention."

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_IDENTITY_KEYS = ("name", "email", "phone")


class SpecError(ValueError):
    """The model's arguments to a raise tool do not describe a valid interaction."""


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def wire(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True)
class InteractionKind:
    kind: str
    capability: str
    tool_name: str
    tool_description: str
    tool_parameters: dict[str, Any]

    def parse_spec(self, arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Return the wire ``spec`` and ``reason`` from the tool's arguments, or raise SpecError."""
        reason = arguments.get("reason", "")
        if not isinstance(reason, str):
            raise SpecError("'reason' must be a string")
        if self.kind == "identity_intake":
            return _identity_spec(arguments), reason
        return _choices_spec(arguments), reason

    def validate(self, spec: dict[str, Any], values: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
        """Return the normalized values and the errors (empty when the values are valid)."""
        if self.kind == "identity_intake":
            return _validate_identity(spec, values)
        return _validate_choices(spec, values)

    def fallback(self, spec: dict[str, Any]) -> str:
        """Return the tool result for a session that cannot render this kind."""
        if self.kind == "identity_intake":
            wanted = ", ".join(f["key"] for f in spec["fields"])
            ask = f"ask the visitor for their {wanted} in conversation"
        else:
            wanted = "; ".join(
                f"{q['question']} ({', '.join(o['label'] for o in q['options'])})" for q in spec["questions"]
            )
            ask = f"ask these questions in conversation and list the options: {wanted}"
        message = f"This channel cannot show the {self.kind} card; {ask}."
        return json.dumps({"status": "no_response", "message": message}, ensure_ascii=False)


IDENTITY_INTAKE = InteractionKind(
    kind="identity_intake",
    capability="identity_form",
    tool_name="request_identity_intake",
    tool_description=(
        "Ask the visitor for their name, email and/or phone with a form. The turn waits for the "
        "answer, which comes back as {status, values?, message?}."
    ),
    tool_parameters={
        "type": "object",
        "properties": {
            "fields": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "key": {"type": "string", "enum": list(_IDENTITY_KEYS)},
                        "required": {"type": "boolean"},
                        "label": {"type": "string"},
                    },
                    "required": ["key", "required"],
                },
            },
            "reason": {"type": "string", "description": "Why the details are needed, shown to the visitor."},
        },
        "required": ["fields", "reason"],
    },
)

CHOICES = InteractionKind(
    kind="choices",
    capability="choice_chips",
    tool_name="request_choices",
    tool_description=(
        "Ask the visitor one to four multiple-choice questions (two to four options each; a free-text "
        "answer is always allowed). The turn waits for the answers."
    ),
    tool_parameters={
        "type": "object",
        "properties": {
            "questions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "question": {"type": "string"},
                        "header": {"type": "string", "description": "Short unique label, at most 12 characters."},
                        "options": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"label": {"type": "string"}, "description": {"type": "string"}},
                                "required": ["label"],
                            },
                        },
                        "multiSelect": {"type": "boolean"},
                    },
                    "required": ["question", "header", "options"],
                },
            },
            "reason": {"type": "string"},
        },
        "required": ["questions", "reason"],
    },
)

KINDS = {kind.tool_name: kind for kind in (IDENTITY_INTAKE, CHOICES)}


# ---------------------------------------------------------------------------
# identity_intake
# ---------------------------------------------------------------------------


def _identity_spec(arguments: dict[str, Any]) -> dict[str, Any]:
    fields = arguments.get("fields")
    if not isinstance(fields, list) or not fields:
        raise SpecError("'fields' must be a non-empty array of {key, required}")
    spec_fields = []
    seen = set()
    for item in fields:
        if not isinstance(item, dict) or item.get("key") not in _IDENTITY_KEYS:
            raise SpecError(f"each field needs a 'key' among {', '.join(_IDENTITY_KEYS)}")
        if item["key"] in seen:
            raise SpecError(f"field {item['key']!r} is listed twice")
        seen.add(item["key"])
        required = item.get("required", False)
        if not isinstance(required, bool):
            raise SpecError(f"field {item['key']!r}: 'required' must be a boolean")
        entry: dict[str, Any] = {"key": item["key"], "required": required}
        if isinstance(item.get("label"), str):
            entry["label"] = item["label"]
        spec_fields.append(entry)
    return {"fields": spec_fields}


def normalize_phone(raw: str) -> str | None:
    """Return ``raw`` in E.164 form, or None when it is not a phone number.

    A number without a leading ``+`` is read as North American when it has 10
    digits, or 11 starting with 1; other national formats need the ``+``.
    """
    text = raw.strip()
    if re.search(r"[^0-9+\s().-]", text) or text.count("+") > 1 or ("+" in text and not text.startswith("+")):
        return None
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        return f"+{digits}" if 8 <= len(digits) <= 15 and digits[0] != "0" else None
    if len(digits) == 10:
        return f"+1{digits}"
    if len(digits) == 11 and digits.startswith("1"):
        return f"+{digits}"
    return None


def _validate_identity(spec: dict[str, Any], values: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    errors: list[FieldError] = []
    normalized: dict[str, str] = {}
    asked = {field["key"]: field for field in spec["fields"]}
    for key in values:
        if key not in asked:
            errors.append(FieldError(str(key), "is not a field of this form"))
    for key, field in asked.items():
        value = values.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if field["required"]:
                errors.append(FieldError(key, "is required"))
            continue
        if not isinstance(value, str):
            errors.append(FieldError(key, "must be a string"))
            continue
        value = value.strip()
        if key == "email":
            if not _EMAIL.match(value):
                errors.append(FieldError(key, "must be a valid email address"))
                continue
        elif key == "phone":
            phone = normalize_phone(value)
            if phone is None:
                errors.append(FieldError(key, "must be a valid phone number, for example +15551234567"))
                continue
            value = phone
        normalized[key] = value
    return normalized, errors


# ---------------------------------------------------------------------------
# choices
# ---------------------------------------------------------------------------


def _choices_spec(arguments: dict[str, Any]) -> dict[str, Any]:
    questions = arguments.get("questions")
    if not isinstance(questions, list) or not 1 <= len(questions) <= 4:
        raise SpecError("'questions' must be an array of 1 to 4 questions")
    spec_questions = []
    headers = set()
    for item in questions:
        if not isinstance(item, dict):
            raise SpecError("each question must be an object")
        question, header, options = item.get("question"), item.get("header"), item.get("options")
        if not isinstance(question, str) or not question.strip():
            raise SpecError("each question needs a non-empty 'question'")
        if not isinstance(header, str) or not header or len(header) > 12:
            raise SpecError("each question needs a 'header' of 1 to 12 characters")
        if header in headers:
            raise SpecError(f"header {header!r} is used twice")
        headers.add(header)
        if not isinstance(options, list) or not 2 <= len(options) <= 4:
            raise SpecError(f"question {header!r} needs 2 to 4 options")
        spec_options = []
        for option in options:
            if not isinstance(option, dict) or not isinstance(option.get("label"), str) or not option["label"]:
                raise SpecError(f"question {header!r}: each option needs a 'label'")
            entry = {"label": option["label"]}
            if isinstance(option.get("description"), str):
                entry["description"] = option["description"]
            spec_options.append(entry)
        multi = item.get("multiSelect", False)
        if not isinstance(multi, bool):
            raise SpecError(f"question {header!r}: 'multiSelect' must be a boolean")
        spec_questions.append({"question": question, "header": header, "options": spec_options, "multiSelect": multi})
    return {"questions": spec_questions}


def _validate_choices(spec: dict[str, Any], values: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    errors: list[FieldError] = []
    answers = values.get("answers")
    if not isinstance(answers, list):
        return {}, [FieldError("answers", "must be an array with one answer per question")]
    questions = {q["header"]: q for q in spec["questions"]}
    given: dict[str, dict[str, Any]] = {}
    for answer in answers:
        if not isinstance(answer, dict) or not isinstance(answer.get("header"), str):
            errors.append(FieldError("answers", "each answer must be an object with a 'header'"))
            continue
        header = answer["header"]
        if header not in questions:
            errors.append(FieldError(f"answers.{header}", "answers no question of this interaction"))
            continue
        if header in given:
            errors.append(FieldError(f"answers.{header}", "is answered twice"))
            continue
        given[header] = answer
    normalized = []
    for header, question in questions.items():
        field = f"answers.{header}"
        answer = given.get(header)
        if answer is None:
            errors.append(FieldError(field, "is required"))
            continue
        picked = answer.get("options", [])
        other = answer.get("other")
        if not isinstance(picked, list) or not all(isinstance(label, str) for label in picked):
            errors.append(FieldError(field, "options must be an array of option labels"))
            continue
        if other is not None and not isinstance(other, str):
            errors.append(FieldError(field, "other must be a string"))
            continue
        other = other.strip() if other else ""
        labels = {option["label"] for option in question["options"]}
        unknown = [label for label in picked if label not in labels]
        if unknown:
            errors.append(FieldError(field, f"{unknown[0]!r} is not one of the options"))
            continue
        if not picked and not other:
            errors.append(FieldError(field, "pick an option or give an 'other' answer"))
            continue
        if not question["multiSelect"] and len(picked) > 1:
            errors.append(FieldError(field, "takes exactly one option"))
            continue
        entry: dict[str, Any] = {"header": header, "options": list(dict.fromkeys(picked))}
        if other:
            entry["other"] = other
        normalized.append(entry)
    return {"answers": normalized}, errors
