#!/usr/bin/env bash
# Makes a local base image for the Dockerfile where registry images cannot be pulled (issue 8):
# Debian 12 with its python3 (3.11), python3-venv and python3-pip, bootstrapped with debootstrap from
# the Debian mirror this machine's apt already uses, and imported into the local container storage
# that buildah and podman share. Prints the image name on its last line of stdout.
#
# Cached in $DUMONT_CACHE_DIR (default /var/cache/dumont/base), keyed by a hash of this script, so
# the package list below is part of the key: the first run bootstraps (a few minutes), later runs
# import the cached root file system tarball (seconds), or do nothing if the image is still there.
#
# Usage: scripts/make-base-image.sh [--print-name]   (--print-name: only print the name, build nothing)
set -euo pipefail

SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
here=$(cd "$(dirname "$0")" && pwd)
cache=${DUMONT_CACHE_DIR:-/var/cache/dumont}/base
key=$( { cat "$here/make-base-image.sh"; uname -m; } | sha256sum | cut -c1-12)
image=localhost/dumont-base:$SUITE-$key
tarball=$cache/$SUITE-$key.tar

log() { echo "make-base-image: $*" >&2; }

if [ "${1:-}" = --print-name ]; then echo "$image"; exit 0; fi
if [ "$(id -u)" != 0 ]; then log "needs root (debootstrap, container storage)"; exit 1; fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { log "missing $tool: run scripts/install-debian-deps.sh"; exit 1; }
done

# The mirror is whatever this machine's apt uses: first URI of a stanza that serves $SUITE itself
# (deb822 sources first, then the one-line format). Never written down in the repository.
debian_mirror() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -r "$f" ]; then
    awk -v suite="$SUITE" '
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { if (uri != "" && found) { print uri; exit } uri = ""; found = 0; next }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
      END { if (uri != "" && found) print uri }' "$f" | head -n1
  fi
  if [ -r /etc/apt/sources.list ]; then
    awk -v suite="$SUITE" '$1 == "deb" && $0 !~ /security/ {
        for (i = 2; i <= NF; i++) if ($i == suite) { print ($2 ~ /^\[/ ? $3 : $2); exit } }' \
      /etc/apt/sources.list
  fi
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # one bootstrap at a time; a second caller waits, then finds the result

if podman image exists "$image"; then
  log "$image already present"
  echo "$image"
  exit 0
fi

if [ ! -s "$tarball" ]; then
  mirror=$(debian_mirror | head -n1)
  if [ -z "$mirror" ]; then log "found no Debian mirror for $SUITE in the apt sources"; exit 1; fi
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
  trap "umount -R '$rootfs/proc' '$rootfs/sys' 2>/dev/null || true; rm -rf '$rootfs' '$tarball.partial'" EXIT
  log "debootstrap $SUITE with $PACKAGES (first run: a few minutes)"
  start=$SECONDS
  debootstrap --variant=minbase --include="$PACKAGES" --components=main \
    "$SUITE" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 30 "$cache/debootstrap.log" >&2; log "debootstrap failed (log above)"; exit 1; }
  # What a container does not need: package caches and lists, docs, man pages.
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
  tar -C "$rootfs" --numeric-owner --xattrs -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  # Tarballs of earlier versions of this script are dead weight (about 190 MB each).
  find "$cache" -maxdepth 1 -name "$SUITE-*.tar" ! -name "$SUITE-$key.tar" -delete
  log "bootstrapped in $((SECONDS - start)) s: $tarball"
fi

log "importing $tarball as $image"
podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$tarball" "$image" >/dev/null
echo "$image"
