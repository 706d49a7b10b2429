"""The knowledge base's ranking and the Rich Interaction validators, called directly."""

from __future__ import annotations

import pytest

from smooth_nb.server.interactions import CHOICES, IDENTITY_INTAKE, SpecError, normalize_phone
from smooth_nb.server.knowledge import KnowledgeBase, seed_demo


@pytest.fixture
def demo():
    knowledge = KnowledgeBase()
    seed_demo(knowledge)
    return knowledge


@pytest.mark.parametrize(
    "question, source",
    [
        ("How long do I have to return an order?", "policies/returns.md"),
        ("Can I still get a refund after delivery?", "policies/returns.md"),
        ("How fast is expedited shipping?", "policies/shipping.md"),
        ("business days for standard delivery", "policies/shipping.md"),
    ],
)
def test_search_ranks_matching_document_first(demo, question, source):
    hits = demo.search(question)

    assert hits[0].source == source
    assert hits[0].score > 0


def test_search_without_shared_term_is_empty(demo):
    assert demo.search("What is the capital of France?") == []


def test_query_falls_back_to_first_documents(demo):
    hits = demo.query("What is the capital of France?")

    assert [hit.source for hit in hits] == ["policies/returns.md", "policies/shipping.md"]
    assert all(hit.score == 0 for hit in hits)


def test_adding_same_source_replaces_text():
    knowledge = KnowledgeBase()
    knowledge.add("old text about llamas", "notes.md")
    knowledge.add("new text about alpacas", "notes.md")

    assert len(knowledge) == 1
    assert knowledge.search("alpacas")[0].content == "new text about alpacas"
    assert knowledge.search("llamas") == []


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("+1 (555) 123-4567", "+15551234567"),
        ("555.123.4567", "+15551234567"),
        ("1-555-123-4567", "+15551234567"),
        ("+44 20 7946 0958", "+442079460958"),
        ("12345", None),
        ("call me", None),
        ("+0 123 456 789", None),
        ("555+1234567", None),
    ],
)
def test_phone_normalizes_to_e164(raw, expected):
    assert normalize_phone(raw) == expected


def test_identity_values_validate_per_field():
    spec, _ = IDENTITY_INTAKE.parse_spec({"fields": [{"key": "email", "required": True}, {"key": "name", "required": False}]})

    values, errors = IDENTITY_INTAKE.validate(spec, {"email": "not-an-email", "age": "41"})

    assert {e.field: e.message for e in errors} == {"age": "is not a field of this form", "email": "must be a valid email address"}
    assert values == {}


def test_identity_values_are_trimmed():
    spec, _ = IDENTITY_INTAKE.parse_spec({"fields": [{"key": "name", "required": True}]})

    values, errors = IDENTITY_INTAKE.validate(spec, {"name": "  Ada Lovelace "})

    assert errors == []
    assert values == {"name": "Ada Lovelace"}


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"fields": []},
        {"fields": [{"key": "address", "required": True}]},
        {"fields": [{"key": "email", "required": "yes"}]},
        {"fields": [{"key": "email", "required": True}, {"key": "email", "required": False}]},
        {"fields": [{"key": "email", "required": True}], "reason": 4},
    ],
)
def test_identity_spec_rejects_bad_arguments(arguments):
    with pytest.raises(SpecError):
        IDENTITY_INTAKE.parse_spec(arguments)


def choices_spec(multi=False):
    spec, _ = CHOICES.parse_spec(
        {"questions": [{"question": "Pick", "header": "Plan", "multiSelect": multi, "options": [{"label": "A"}, {"label": "B"}]}]}
    )
    return spec


@pytest.mark.parametrize(
    "answer, message",
    [
        ({"header": "Plan", "options": ["C"]}, "'C' is not one of the options"),
        ({"header": "Plan", "options": ["A", "B"]}, "takes exactly one option"),
        ({"header": "Plan", "options": []}, "pick an option or give an 'other' answer"),
        ({"header": "Plan", "options": "A"}, "options must be an array of option labels"),
    ],
)
def test_single_choice_answer_errors(answer, message):
    _, errors = CHOICES.validate(choices_spec(), {"answers": [answer]})

    assert [e.message for e in errors] == [message]
    assert errors[0].field == "answers.Plan"


def test_multi_choice_accepts_several_and_other():
    values, errors = CHOICES.validate(choices_spec(multi=True), {"answers": [{"header": "Plan", "options": ["A", "B"], "other": " C "}]})

    assert errors == []
    assert values == {"answers": [{"header": "Plan", "options": ["A", "B"], "other": "C"}]}


@pytest.mark.parametrize(
    "arguments",
    [
        {"questions": []},
        {"questions": [{"question": "q", "header": "a header that is far too long", "options": [{"label": "A"}, {"label": "B"}]}]},
        {"questions": [{"question": "q", "header": "H", "options": [{"label": "A"}]}]},
        {"questions": [{"question": "q", "header": "H", "options": [{"label": "A"}, {"label": "B"}]}] * 2},
        {"questions": [{"question": "q", "header": f"H{i}", "options": [{"label": "A"}, {"label": "B"}]} for i in range(5)]},
    ],
)
def test_choices_spec_rejects_bad_arguments(arguments):
    with pytest.raises(SpecError):
        CHOICES.parse_spec(arguments)
