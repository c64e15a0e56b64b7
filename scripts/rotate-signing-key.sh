#!/usr/bin/env bash
# Rotate the gateway's signing key without downtime (README: "Rotate a signing key").
#
# An access token must verify everywhere from the moment it is issued until it expires, so
# the key set changes in three steps, each in force at every gateway replica before the
# next one starts. Nothing restarts: every gateway process watches SIGNING_KEYS_FILE and
# reloads it within a second of a change (a Kubernetes Secret update included), serving
# the new JWKS and signing with the new first key from then on.
#
#   1. publish  `keys generate --append`: the next key is in the JWKS; the current key still
#               signs. Then wait until every verifier's cached JWKS has it: the gateway
#               serves it with Cache-Control max-age=300 (JWKS_MAX_AGE_S).
#   2. promote  `keys promote`: the next key signs; the old one stays published, so the
#               tokens it signed still verify. Then wait until the last of those has expired:
#               one ACCESS_TOKEN_TTL (300 s by default) plus the verifiers' clock tolerance.
#   3. retire   `keys retire`: the old key leaves the JWKS.
#
# The key file is the whole state (its first key signs; `keys list` shows it), so the steps
# can also be run one at a time with --step, e.g. as separate scheduled jobs.
set -euo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'EOF'
usage: scripts/rotate-signing-key.sh --file FILE [--apply CMD] [options]

  --file FILE        the private JWKS the gateway loads (SIGNING_KEYS_FILE), as the CLI sees it.
                     When the gateways read this very file, nothing else is needed: they reload it.
  --apply CMD        shell command that copies FILE to where the gateways read it (e.g. updates
                     the Kubernetes Secret) and returns once it is there; the gateways reload it
                     themselves, no restart. Runs after each step with LATCHKEY_KEYS_FILE and
                     LATCHKEY_ROTATION_STEP (publish, promote, retire) in its environment.
  --alg ALG          algorithm of the new key: EdDSA, ES256 or RS256 (default: the signing
                     key's, so an ES256 file stays ES256)
  --publish-wait S   seconds between publish and promote (default 360: the JWKS max-age of
                     300 s plus a margin)
  --retire-wait S    seconds between promote and retire (default 365: ACCESS_TOKEN_TTL 300 s,
                     5 s clock tolerance, a margin). Raise it if you raised ACCESS_TOKEN_TTL.
  --step STEP        all (default), publish, promote or retire
  --kid KID          with --step promote: the key to promote (default: the last key in FILE);
                     with --step retire: the key to retire (default: every key but the signing one)
  -h, --help         this text

environment:
  LATCHKEY           the CLI command (default: node <repo>/bin/latchkey.js, which needs
                     `npm run build`); e.g. LATCHKEY="docker compose run --rm -T cli"
EOF
}

log() { printf 'rotate-signing-key: %s\n' "$*"; }
die() { printf 'rotate-signing-key: %s\n' "$*" >&2; exit "${2:-1}"; }
usage_error() { printf 'rotate-signing-key: %s (see --help)\n' "$*" >&2; exit 2; }

FILE=''
APPLY=''
ALG=''
PUBLISH_WAIT=360
RETIRE_WAIT=365
STEP='all'
KID=''
while (($# > 0)); do
  case "$1" in
    --file) FILE=${2-}; shift 2 || usage_error '--file needs a value' ;;
    --apply) APPLY=${2-}; shift 2 || usage_error '--apply needs a value' ;;
    --alg) ALG=${2-}; shift 2 || usage_error '--alg needs a value' ;;
    --publish-wait) PUBLISH_WAIT=${2-}; shift 2 || usage_error '--publish-wait needs a value' ;;
    --retire-wait) RETIRE_WAIT=${2-}; shift 2 || usage_error '--retire-wait needs a value' ;;
    --step) STEP=${2-}; shift 2 || usage_error '--step needs a value' ;;
    --kid) KID=${2-}; shift 2 || usage_error '--kid needs a value' ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done

[[ -n "$FILE" ]] || usage_error '--file FILE is required'
[[ "$PUBLISH_WAIT" =~ ^[0-9]+$ ]] || usage_error "--publish-wait: expected seconds, got '$PUBLISH_WAIT'"
[[ "$RETIRE_WAIT" =~ ^[0-9]+$ ]] || usage_error "--retire-wait: expected seconds, got '$RETIRE_WAIT'"
case "$STEP" in
  all) [[ -z "$KID" ]] || usage_error '--kid applies to --step promote or retire' ;;
  publish) [[ -z "$KID" ]] || usage_error '--kid applies to --step promote or retire' ;;
  promote | retire) ;;
  *) usage_error "--step: expected all, publish, promote or retire, got '$STEP'" ;;
esac

# The CLI, split on spaces: LATCHKEY="docker compose run --rm -T cli" works as written.
if [[ -n "${LATCHKEY:-}" ]]; then
  read -r -a CLI <<<"$LATCHKEY"
else
  CLI=(node "$ROOT/bin/latchkey.js")
fi
# Tests count the waits instead of sitting through them.
read -r -a SLEEP <<<"${LATCHKEY_SLEEP:-sleep}"

keys() { "${CLI[@]}" keys "$@"; }
# `keys list` prints "<kid> <alg> signing|published", the signing key first.
key_list() { keys list --file "$FILE"; }

apply() {
  local step=$1 status=0
  if [[ -z "$APPLY" ]]; then
    log "$step: done in $FILE; gateways reading it reload it within a second"
    return
  fi
  log "$step: applying"
  LATCHKEY_KEYS_FILE="$FILE" LATCHKEY_ROTATION_STEP="$step" bash -c "$APPLY" || status=$?
  if ((status != 0)); then
    die "$step: --apply failed (exit $status). $FILE already holds the $step step: put it in place, then $(what_next "$step")"
  fi
}

what_next() {
  case "$1" in
    publish) echo 'continue with --step promote' ;;
    promote) echo 'continue with --step retire' ;;
    *) echo 'the rotation is complete' ;;
  esac
}

wait_for() {
  local seconds=$1 why=$2
  ((seconds > 0)) || return 0
  log "waiting ${seconds} s: $why"
  "${SLEEP[@]}" "$seconds"
}

# Sets NEW_KID: `--append` puts the new key last. Without --alg, the signing key's alg.
publish() {
  local listed alg=$ALG
  if [[ -z "$alg" ]]; then
    listed=$(key_list) || die "cannot read $FILE (see above)"
    alg=$(awk '$3 == "signing" { print $2 }' <<<"$listed")
    [[ -n "$alg" ]] || die "publish: cannot find the signing key's algorithm in $FILE"
  fi
  keys generate --alg "$alg" --out "$FILE" --append || die 'publish: keys generate failed (see above)'
  listed=$(key_list) || die "cannot read $FILE (see above)"
  NEW_KID=$(awk 'END { print $1 }' <<<"$listed")
  [[ -n "$NEW_KID" ]] && [[ "$(awk 'END { print $3 }' <<<"$listed")" == published ]] || die "publish: cannot find the new key in $FILE"
  apply publish
}

promote() {
  local kid=$1
  keys promote --file "$FILE" -- "$kid" || die "promote: keys promote failed (see above)"
  apply promote
}

retire() {
  local kid
  [[ $# -gt 0 ]] || die "retire: nothing to retire: $FILE holds only its signing key"
  for kid in "$@"; do
    keys retire --file "$FILE" -- "$kid" || die "retire: keys retire failed (see above)"
  done
  apply retire
}

case "$STEP" in
  all)
    old=$(key_list | awk '$3 == "signing" { print $1 }') || die "cannot read $FILE (see above)"
    [[ -n "$old" ]] || die "cannot find the signing key in $FILE"
    log "signing key now: $old"
    publish
    new=$NEW_KID
    log "publish: $new is published; $old still signs"
    wait_for "$PUBLISH_WAIT" "every cached JWKS (max-age 300 s) learns $new"
    promote "$new"
    log "promote: $new signs; $old stays published"
    wait_for "$RETIRE_WAIT" "the last token signed with $old expires (ACCESS_TOKEN_TTL)"
    retire "$old"
    log "retire: $old is gone; rotation complete, $new signs"
    ;;
  publish)
    publish
    log "publish: $NEW_KID is published; next, after ${PUBLISH_WAIT} s: --step promote --kid $NEW_KID"
    ;;
  promote)
    kid=$KID
    [[ -n "$kid" ]] || kid=$(key_list | awk 'END { print $1 }')
    promote "$kid"
    log "promote: next, after ${RETIRE_WAIT} s: --step retire"
    ;;
  retire)
    if [[ -n "$KID" ]]; then
      retire "$KID"
    else
      listed=$(key_list) || die "cannot read $FILE (see above)"
      published=()
      # A loop rather than mapfile: macOS still ships bash 3.2.
      while IFS= read -r kid; do
        [[ -z "$kid" ]] || published+=("$kid")
      done <<<"$(awk '$3 == "published" { print $1 }' <<<"$listed")"
      retire ${published[@]+"${published[@]}"}
    fi
    ;;
esac
