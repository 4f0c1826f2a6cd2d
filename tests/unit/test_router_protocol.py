"""Request parsing: what is accepted and the 400 that names the field of what is not."""

from __future__ import annotations

import pytest

from slmfleet.router.errors import RouterError
from slmfleet.router.protocol import chat_prompt, parse_chat, parse_completion


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "invalid_request"),
        ({"messages": [{"role": "user", "content": "x"}]}, "invalid_request"),
        ({"model": "m", "messages": []}, "invalid_request"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "invalid_request"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}] * 3}, "too_many_messages"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "invalid_request",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "invalid_request",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "invalid_request"),
    ],
)
def test_parse_chat_rejects(body, code):
    with pytest.raises(RouterError) as e:
        parse_chat(body, max_messages=2)
    assert e.value.status == 400 and e.value.code == code


def test_parse_chat_and_prompt():
    r = parse_chat(
        {
            "model": "m",
            "stream": True,
            "max_tokens": 5,
            "temperature": 0.1,
            "sampling_parameters": {"think_tokens": 3},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
        },
        max_messages=8,
    )
    assert r.prompt == "Be brief.\n\nhi" and r.routing_text == "hi"
    assert r.sampling == {"temperature": 0.1, "think_tokens": 3} and r.max_tokens == 5
    assert chat_prompt(
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    ) == ("user: a\nassistant: b\nuser: c\nassistant:")
    assert parse_completion({"model": "m", "prompt": ["x"]}).prompt == "x"


def test_non_string_role_is_a_400_naming_the_field():
    with pytest.raises(RouterError) as e:
        parse_chat({"model": "m", "messages": [{"role": ["user"], "content": "x"}]}, max_messages=4)
    assert e.value.status == 400 and e.value.param == "messages[0].role"
