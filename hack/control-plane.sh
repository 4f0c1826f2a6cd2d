#!/usr/bin/env bash
# Builds (once) and caches the binaries of a real Kubernetes control plane from the Go
# module proxy: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd,
# kwok and helm. Prints the cache directory. Honours KUBEBUILDER_ASSETS for the
# envtest binaries (kube-apiserver, etcd, kubectl) when they are present there.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
CACHE=${SLMFLEET_CACHE:-$HOME/.cache/slmfleet}
BIN="$CACHE/bin/k8s-$K8S_VERSION"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
mkdir -p "$BIN"

log() { echo "control-plane: $*" >&2; }

link_assets() {
  [ -n "${KUBEBUILDER_ASSETS:-}" ] || return 0
  for b in kube-apiserver etcd kubectl; do
    if [ -x "$KUBEBUILDER_ASSETS/$b" ] && [ ! -e "$BIN/$b" ]; then
      ln -sf "$KUBEBUILDER_ASSETS/$b" "$BIN/$b"; log "using $KUBEBUILDER_ASSETS/$b"
    fi
  done
}

build_kubernetes() {
  local need=()
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$BIN/$b" ] || need+=("$b")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  log "building ${need[*]} $K8S_VERSION (several minutes, once)"
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local staging=v0.${K8S_VERSION#v1.}
  (
    cd "$w"
    go mod init slmfleet.local/k8swrap >/dev/null 2>&1
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    # Every staging module is pinned at v0.0.0 in kubernetes' go.mod: point each at its tag.
    for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u); do
      go mod edit "-replace=$m=$m@$staging"
    done
    go mod edit "-require=k8s.io/kubernetes@$K8S_VERSION"
    { echo '//go:build tools'; echo 'package tools'; echo 'import ('
      for b in "${need[@]}"; do echo "  _ \"k8s.io/kubernetes/cmd/$b\""; done; echo ')'; } > tools.go
    go mod tidy >/dev/null
    local_ld=""
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      local_ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    done
    for b in "${need[@]}"; do
      log "go build $b"
      go build -p 2 -trimpath -ldflags "-s -w$local_ld" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$BIN/$b.tmp" "$BIN/$b"
    done
  )
}

build_wrapped() {  # name module version package
  local name=$1 mod=$2 ver=$3 pkg=$4
  [ -x "$BIN/$name" ] && return 0
  log "building $name $ver"
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  (
    cd "$w"
    go mod init "slmfleet.local/$name-wrap" >/dev/null 2>&1
    go mod edit "-require=$mod@$ver"
    printf '//go:build tools\npackage tools\nimport _ "%s"\n' "$pkg" > tools.go
    go mod tidy >/dev/null
    go build -p 2 -trimpath -ldflags "-s -w" -o "$BIN/$name.tmp" "$pkg"
    mv "$BIN/$name.tmp" "$BIN/$name"
  )
}

kwok_stages() {
  # kwok ships its stage definitions (how fake Nodes and Pods progress) in its module
  # source, not in the binary: gather the "fast" set from the module cache.
  [ -s "$BIN/kwok-stages.yaml" ] && return 0
  local dir
  dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  local st="$dir/kustomize/stage"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"; cat "$st/$f"
  done > "$BIN/kwok-stages.yaml.tmp"
  mv "$BIN/kwok-stages.yaml.tmp" "$BIN/kwok-stages.yaml"
}

link_assets
build_wrapped etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
build_wrapped kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
build_wrapped helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
build_kubernetes
kwok_stages
echo "$BIN"
