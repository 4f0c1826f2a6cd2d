"""Which ledger a process uses, from its environment (the chart sets these for the router
and the operator alike, see charts/slmfleet/templates/_ledger.tpl):

- ``SLMFLEET_LEDGER_URL``: ``redis://`` or ``rediss://`` (TLS) URL of Redis or Valkey;
  unset: the in-process ledger (one replica: ``slmfleet up``, tests);
- ``SLMFLEET_LEDGER_PASSWORD_FILE``: a file holding its password (the chart mounts the
  Secret there), or ``SLMFLEET_LEDGER_PASSWORD``: the password itself; never in the URL;
- ``SLMFLEET_LEDGER_CA_FILE``: CA bundle that verifies a ``rediss://`` server;
- ``SLMFLEET_LEDGER_KEY_PREFIX``: key prefix (default ``{slmfleet}``: one hash slot);
- ``SLMFLEET_LEDGER_TIMEOUT_MS``: per-operation timeout (default 250).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .inprocess import InProcessLedger
from .ledger import Ledger
from .redis_ledger import RedisLedger, RedisSettings

PREFIX = "SLMFLEET_LEDGER_"


def settings_from_env(environ: Mapping[str, str] | None = None) -> RedisSettings | None:
    """The shared ledger's settings, or None when no URL is set (in-process)."""
    env = os.environ if environ is None else environ
    url = (env.get(PREFIX + "URL") or "").strip()
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://")):
        raise ValueError(f"{PREFIX}URL must be a redis:// or rediss:// URL, not {url[:40]!r}")
    try:
        timeout_ms = float(env.get(PREFIX + "TIMEOUT_MS") or 250)
    except ValueError:
        raise ValueError(f"{PREFIX}TIMEOUT_MS must be a number of milliseconds") from None
    if not 1 <= timeout_ms <= 60_000:
        raise ValueError(f"{PREFIX}TIMEOUT_MS must be within 1..60000, not {timeout_ms}")
    password = env.get(PREFIX + "PASSWORD") or None
    path = env.get(PREFIX + "PASSWORD_FILE")
    if path:
        try:
            password = Path(path).read_text().strip() or None
        except OSError as exc:
            raise ValueError(f"{PREFIX}PASSWORD_FILE {path}: {exc.strerror}") from None
    return RedisSettings(
        url=url,
        password=password,
        ca_file=env.get(PREFIX + "CA_FILE") or None,
        key_prefix=env.get(PREFIX + "KEY_PREFIX") or RedisSettings.key_prefix,
        timeout_s=timeout_ms / 1000,
    )


def ledger_from_env(environ: Mapping[str, str] | None = None) -> Ledger:
    """The shared Redis ledger when ``SLMFLEET_LEDGER_URL`` is set, else in-process."""
    settings = settings_from_env(environ)
    if settings is None:
        return InProcessLedger()
    return RedisLedger(settings)
