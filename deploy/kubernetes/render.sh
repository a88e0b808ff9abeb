#!/usr/bin/env bash
# Print the manifests of one kustomization of deploy/kubernetes with the pinned kustomize (installed once from
# the Go module proxy into .tools/, which git ignores). The deploy tests render through it; CI runs --install first.
#
#   deploy/kubernetes/render.sh overlays/dev            # kustomize build deploy/kubernetes/overlays/dev
#   deploy/kubernetes/render.sh /some/copy/overlays/dev # any kustomization directory
#   deploy/kubernetes/render.sh --install               # only install kustomize; print its path
#
# KUSTOMIZE=/path/to/kustomize uses that one instead (any v5).
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.2
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target_dir="$root/.tools/kustomize-$KUSTOMIZE_VERSION"

install_kustomize() {
  command -v go >/dev/null || {
    echo "render: Go is needed to install kustomize $KUSTOMIZE_VERSION (or set KUSTOMIZE)" >&2
    exit 2
  }
  mkdir -p "$root/.tools"
  # Install beside the target and move it into place, so concurrent runs never see half an install.
  local scratch
  scratch="$(mktemp -d "$root/.tools/.kustomize-install-XXXXXX")"
  echo "render: installing sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION into ${target_dir#"$root"/}" >&2
  # GOTOOLCHAIN=local: this version builds with the machine's Go; never fetch another toolchain.
  GOBIN="$scratch" GOTOOLCHAIN=local GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
  chmod 755 "$scratch"
  mv -T "$scratch" "$target_dir" 2>/dev/null || rm -rf "$scratch"
}

kustomize="${KUSTOMIZE:-$target_dir/kustomize}"
if [[ -z "${KUSTOMIZE:-}" && ! -x "$kustomize" ]]; then
  install_kustomize
fi

if [[ "${1:-}" == "--install" ]]; then
  echo "$kustomize"
  exit 0
fi
directory="${1:?usage: deploy/kubernetes/render.sh overlays/dev|overlays/production|base|DIRECTORY}"
[[ "$directory" == /* ]] || directory="$here/$directory"
exec "$kustomize" build "$directory"
