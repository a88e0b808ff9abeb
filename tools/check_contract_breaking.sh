#!/usr/bin/env bash
# Fail when proto/ breaks the committed baseline image: `buf lint` and `buf breaking` (FILE rules,
# proto/buf.yaml) against proto/baseline/michi-v1.binpb. Run by `make lint`; changes nothing in the repo
# (a missing buf is installed once from npm, pinned, into .tools/, which git ignores).
#
#   tools/check_contract_breaking.sh                      # check proto/ against the baseline
#   tools/check_contract_breaking.sh PROTO_DIR [IMAGE]    # check another copy (the tests do)
#   tools/check_contract_breaking.sh --update-baseline    # check, then rebuild the baseline from proto/
#
# Rebuild the baseline after an additive change is merged, so the new fields are protected too, and
# commit the image with it. BUF=/path/to/buf uses that buf instead of the pinned one.
set -euo pipefail

BUF_VERSION=1.75.0
root="$(cd "$(dirname "$0")/.." && pwd)"
update=0
if [[ "${1:-}" == "--update-baseline" ]]; then
  update=1
  shift
fi
proto="${1:-$root/proto}"
baseline="${2:-$root/proto/baseline/michi-v1.binpb}"

install_buf() {
  local tools="$root/.tools" target="$root/.tools/buf-$BUF_VERSION" scratch
  command -v npm >/dev/null || {
    echo "check-contract-breaking: npm is needed to install buf $BUF_VERSION (apt-get install npm), or set BUF" >&2
    exit 2
  }
  mkdir -p "$tools"
  # Install beside the target and move it into place, so concurrent runs never see half an install.
  scratch="$(mktemp -d "$tools/.buf-install-XXXXXX")"
  chmod 755 "$scratch"
  echo "check-contract-breaking: installing @bufbuild/buf@$BUF_VERSION into ${target#"$root"/}" >&2
  npm install --prefix "$scratch" --no-save --no-package-lock --no-audit --no-fund --ignore-scripts \
    --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2
  mv -T "$scratch" "$target" 2>/dev/null || rm -rf "$scratch"
}

buf="${BUF:-$root/.tools/buf-$BUF_VERSION/node_modules/.bin/buf}"
if [[ -z "${BUF:-}" && ! -x "$buf" ]]; then
  install_buf
fi
[[ -f "$baseline" ]] || ((update)) || {
  echo "check-contract-breaking: no baseline image at $baseline (tools/check_contract_breaking.sh --update-baseline)" >&2
  exit 2
}

"$buf" lint "$proto"
if [[ -f "$baseline" ]] && ! "$buf" breaking "$proto" --against "$baseline"; then
  echo "check-contract-breaking: ${proto#"$root"/} breaks the contract in ${baseline#"$root"/} (FILE rules):" \
    "schemas change additively; a rename or removal is a new message or a new .v2 topic (docs/consumers.md)" >&2
  exit 1
fi
if ((update)); then
  "$buf" build "$proto" --exclude-source-info -o "$baseline"
  echo "check-contract-breaking: rebuilt ${baseline#"$root"/} from ${proto#"$root"/}; commit it"
else
  echo "check-contract-breaking: ${proto#"$root"/} is compatible with ${baseline#"$root"/} (buf $("$buf" --version))"
fi
