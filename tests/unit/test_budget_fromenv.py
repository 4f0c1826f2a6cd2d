"""Which ledger a process uses, from the environment the chart sets."""

from __future__ import annotations

import pytest

from slmfleet.budget.fromenv import ledger_from_env, settings_from_env
from slmfleet.budget.inprocess import InProcessLedger
from slmfleet.budget.redis_ledger import RedisLedger


def test_no_url_is_the_in_process_ledger():
    assert settings_from_env({}) is None
    assert settings_from_env({"SLMFLEET_LEDGER_URL": "  "}) is None
    assert isinstance(ledger_from_env({}), InProcessLedger)


async def test_url_password_file_prefix_and_timeout(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    env = {
        "SLMFLEET_LEDGER_URL": "rediss://ledger:6380/0",
        "SLMFLEET_LEDGER_PASSWORD": "ignored-when-a-file-is-given",
        "SLMFLEET_LEDGER_PASSWORD_FILE": str(secret),
        "SLMFLEET_LEDGER_CA_FILE": "/ca.crt",
        "SLMFLEET_LEDGER_KEY_PREFIX": "{team}",
        "SLMFLEET_LEDGER_TIMEOUT_MS": "100",
    }
    s = settings_from_env(env)
    assert (s.url, s.password, s.ca_file, s.key_prefix, s.timeout_s) == (
        "rediss://ledger:6380/0",
        "s3cret",
        "/ca.crt",
        "{team}",
        0.1,
    )
    led = ledger_from_env({"SLMFLEET_LEDGER_URL": "redis://127.0.0.1:1/0"})
    assert isinstance(led, RedisLedger) and led.settings.key_prefix == "{slmfleet}"
    await led.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLMFLEET_LEDGER_URL": "http://ledger"}, "redis:// or rediss://"),
        ({"SLMFLEET_LEDGER_URL": "redis://x", "SLMFLEET_LEDGER_TIMEOUT_MS": "soon"}, "number"),
        ({"SLMFLEET_LEDGER_URL": "redis://x", "SLMFLEET_LEDGER_TIMEOUT_MS": "0"}, "1..60000"),
        ({"SLMFLEET_LEDGER_URL": "redis://x", "SLMFLEET_LEDGER_PASSWORD_FILE": "/nope"}, "/nope"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(env, message):
    with pytest.raises(ValueError, match="SLMFLEET_LEDGER_") as e:
        settings_from_env(env)
    assert message in str(e.value)
