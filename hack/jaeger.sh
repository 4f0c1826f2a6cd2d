#!/usr/bin/env bash
# Builds (once) and caches Jaeger v2 (`cmd/jaeger`, an OpenTelemetry Collector with
# Jaeger's storage and query API) from the Go module proxy: the real OTLP receiver the
# tracing tests send spans to. Prints the binary's path. Built from the module's own
# go.mod/go.sum (so its replace directives and pinned versions apply), with two jobs at
# most; the first build takes several minutes.
set -euo pipefail

JAEGER_VERSION=${JAEGER_VERSION:-v1.76.0}
CACHE=${SLMFLEET_CACHE:-$HOME/.cache/slmfleet}
BIN="$CACHE/bin/jaeger-$JAEGER_VERSION"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
mkdir -p "$BIN"

if [ ! -x "$BIN/jaeger" ]; then
  echo "jaeger: building $JAEGER_VERSION (several minutes, once)" >&2
  dir=$(go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  (
    cd "$dir"
    go build -p 2 -trimpath -ldflags "-s -w" -o "$BIN/jaeger.tmp" ./cmd/jaeger
  )
  mv "$BIN/jaeger.tmp" "$BIN/jaeger"
fi
echo "$BIN/jaeger"
