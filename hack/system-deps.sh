#!/usr/bin/env bash
# Installs (once) the Debian packages the test suites and `make run` need, so that
# `make test` on a fresh machine runs every suite with no skips. Each entry is
# "command package": the package is installed when the command is missing.
# Needs root (or sudo) only when something is missing.
set -euo pipefail

NEEDS=(
  "openssl openssl"                              # service-account keys of the local API server
  "lua5.4 lua5.4"                                # the Argo CD health checks the examples ship
  "redis-server redis-server"                    # the shared spend ledger (budget tests)
  "pg_ctlcluster postgresql"                     # the decision store's PostgreSQL tests
  "runuser util-linux"                           # PostgreSQL refuses root: tests run it as postgres
  "chromium chromium"                            # the reviewer console's browser tests
)

missing=()
for entry in "${NEEDS[@]}"; do
  read -r cmd pkg <<<"$entry"
  if [[ "$cmd" == /* ]]; then [ -e "$cmd" ] || missing+=("$pkg"); continue; fi
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "system-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "system-deps: need root to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
