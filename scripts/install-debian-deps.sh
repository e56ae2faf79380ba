#!/usr/bin/env bash
# Installs the Debian packages listed in scripts/debian-packages.txt. Idempotent: skips apt entirely
# when every package is already installed, so a second `make test` costs nothing here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/debian-packages.txt")
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then echo "install-debian-deps: need root to install: ${missing[*]}" >&2; exit 1; fi
echo "install-debian-deps: installing ${missing[*]}"
# Packages such as nginx and openssh-server start their daemons on install; tests start their own
# on loopback ports, so keep the packaged ones from starting (policy-rc.d exit 101 = "not allowed").
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1; fi
trap '[ $created_policy = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
