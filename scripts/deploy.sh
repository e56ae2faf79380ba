#!/usr/bin/env bash
# From nothing to a running pair and proxy, in one command (issue 8; docs/DEPLOY.md).
#
#   scripts/deploy.sh --pair alice-1 --gpu root@GPU_SSH_HOST:PORT --gpu-url http://GPU_IP:PORT
#       --standby dumont@STANDBY_IP [--standby-url URL] [--listen HOST:PORT] [--skip-pair]
#       [--prefix DIR] [--dry-run] [-- PAIR_CREATE_FLAGS]
#
# Run as root on the host that will serve the proxy. Each step first looks at what is already there
# and does only what is missing, so running it again changes nothing (a changed checkout, unit or
# setting restarts the proxy once). --dry-run prints every step and the commands it would run, and
# changes nothing.
#
#  1. install   this checkout into a venv (default /opt/dumont), when its sources changed
#  2. user      the `dumont` system user, its home /var/lib/dumont and an admin SSH key
#  3. pair      `dumont-provision pair create` (idempotent): the Vast.ai GPU, then the standby VM;
#               credentials from the environment (VAST_API_KEY, DUMONT_PROVISION_GCP_PROJECT, ...)
#  4. sync      `dumont-provision sync deploy`: gate, sync key, lsyncd on the GPU (its systemd unit
#               is deploy/systemd/dumont-lsyncd.service), first sync
#  5. proxy     /etc/dumont/proxy.env (backends, admin token, fence and reverse-sync hooks) and
#               deploy/systemd/dumont-proxy.service, enabled and started; waits for its healthz
#
# DUMONT_PROVISION names another dumont-provision to run (tests/deploy runs the script with a
# stand-in that records its calls).
#
# The machines' addresses (--gpu, --gpu-url, --standby) come from the operator for now:
# `dumont-provision pair show` does not print them yet. Without them the script stops after step 3
# (exit status 3) and says what to add; run it again with them.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/dumont
home=/var/lib/dumont
etc=/etc/dumont
unit_dir=/etc/systemd/system
dry_run=0 skip_pair=0 pair="" gpu="" standby="" gpu_url="" standby_url="" listen=0.0.0.0:8888
pair_args=()

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "deploy: $*" >&2; exit 1; }
step() { echo "== $*"; }
# Runs a command, or in a dry run prints it. Every change to the machine goes through here or put().
run() {
  if [ $dry_run = 1 ]; then echo "   would run: $(printf '%q ' "$@")"; else "$@"; fi
}
# put FILE MODE OWNER: installs stdin as FILE when it differs; returns 0 when it changed FILE.
put() {
  local file=$1 mode=$2 owner=$3 new
  new=$(mktemp)
  cat >"$new"
  if [ -f "$file" ] && cmp -s "$new" "$file"; then
    echo "   unchanged: $file"; rm -f "$new"; return 1
  fi
  if [ $dry_run = 1 ]; then
    echo "   would write: $file"; rm -f "$new"; return 0
  fi
  install -D -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$new" "$file"
  rm -f "$new"
  echo "   wrote: $file"
}
host_of() { local h=${1#*@}; h=${h%:*}; echo "$h"; }

while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    --skip-pair) skip_pair=1 ;;
    --pair) pair=${2:?}; shift ;;
    --gpu) gpu=${2:?}; shift ;;
    --standby) standby=${2:?}; shift ;;
    --gpu-url) gpu_url=${2:?}; shift ;;
    --standby-url) standby_url=${2:?}; shift ;;
    --listen) listen=${2:?}; shift ;;
    --prefix) prefix=${2:?}; shift ;;
    -h|--help) usage 0 ;;
    --) shift; pair_args=("$@"); break ;;
    *) echo "deploy: unknown option $1" >&2; usage ;;
  esac
  shift
done
[ -n "$pair" ] || { echo "deploy: --pair is required" >&2; usage; }
[ $dry_run = 1 ] || [ "$(id -u)" = 0 ] || die "run as root (or with --dry-run)"
command -v python3 >/dev/null || die "python3 (>= 3.11) is needed"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 >= 3.11 is needed"
if [ $dry_run = 0 ] && [ ! -d /run/systemd/system ]; then
  die "systemd is not running here: run the proxy's container image instead (docs/DEPLOY.md)"
fi
[ $dry_run = 1 ] && echo "deploy: dry run: nothing is changed"
changed=0
provision=("${DUMONT_PROVISION:-$prefix/bin/dumont-provision}" --store "$home/pairs.sqlite3")
as_dumont=(runuser -u dumont --)

step "1/5 install $repo into $prefix"
# The sources' hash, not git's HEAD: a checkout with local edits must be reinstalled too.
sources=()
for path in pyproject.toml README.md proxy provisioning templates static; do
  [ -e "$repo/$path" ] && sources+=("$path")
done
stamp=$(cd "$repo" && tar -c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --exclude=__pycache__ "${sources[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$prefix/.dumont-source" 2>/dev/null)" = "$stamp" ]; then
  echo "   unchanged: $prefix (sources $stamp)"
else
  [ -x "$prefix/bin/python" ] || run python3 -m venv "$prefix"
  run "$prefix/bin/pip" install --quiet --upgrade "$repo"
  # The proxy finds its pages and static files here (DUMONT_ASSETS_DIR in proxy.env).
  run rm -rf "$prefix/share/dumont"
  run mkdir -p "$prefix/share/dumont"
  for dir in templates static; do
    [ -d "$repo/$dir" ] && run cp -r "$repo/$dir" "$prefix/share/dumont/"
  done
  if [ $dry_run = 0 ]; then echo "$stamp" >"$prefix/.dumont-source"; fi
  changed=1
fi

step "2/5 user dumont, $home, admin SSH key"
if id dumont >/dev/null 2>&1; then
  echo "   unchanged: user dumont"
else
  run useradd --system --user-group --home-dir "$home" --create-home --shell /usr/sbin/nologin dumont
fi
run install -d -m 0750 -o dumont -g dumont "$home" "$home/.ssh"
run install -d -m 0750 -o root -g dumont "$etc"
key=$home/.ssh/id_ed25519
if [ -f "$key" ]; then
  echo "   unchanged: $key"
else
  run "${as_dumont[@]}" ssh-keygen -q -t ed25519 -N '' -C "dumont-admin@$(hostname)" -f "$key"
fi

step "3/5 pair $pair"
if [ $skip_pair = 1 ]; then
  echo "   skipped (--skip-pair)"
else
  run "${as_dumont[@]}" "${provision[@]}" pair create --pair "$pair" --ssh-public-key "$key.pub" \
    "${pair_args[@]}"
fi
if [ -z "$gpu" ] || [ -z "$standby" ] || [ -z "$gpu_url" ]; then
  echo "deploy: to go on past the pair step, give the pair's machines:" >&2
  echo "deploy:   --gpu root@HOST:PORT      the GPU's SSH address (Vast.ai's console)" >&2
  echo "deploy:   --gpu-url http://IP:PORT  its code-server (Vast maps port 8080 to a public one)" >&2
  echo "deploy:   --standby dumont@IP       the standby VM (its code-server: http://IP:8080)" >&2
  exit 3
fi
standby_url=${standby_url:-http://$(host_of "$standby"):8080}
sync_args=(--gpu "$gpu" --standby "$standby" --key "$key")

step "4/5 sync $gpu -> $standby"
sync_stamp=$home/deploy-sync.args
if [ "$(cat "$sync_stamp" 2>/dev/null)" = "${sync_args[*]}" ]; then
  echo "   unchanged: sync deployed with these machines ($sync_stamp)"
else
  run "${as_dumont[@]}" "${provision[@]}" sync deploy "${sync_args[@]}"
  if [ $dry_run = 0 ]; then echo "${sync_args[*]}" >"$sync_stamp"; fi
fi

step "5/5 proxy on $listen: $gpu_url, standby $standby_url"
token_file=$etc/admin-token
if [ -s "$token_file" ]; then
  token=$(cat "$token_file")
else
  token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
  printf '%s\n' "$token" | put "$token_file" 0640 root:dumont || true
fi
hook() { printf '%q ' "${provision[@]}" sync "$1" "${sync_args[@]}"; }
# The hooks name --gpu and --standby themselves: DUMONT_STANDBY in this file is the proxy's backend
# URL, and dumont-provision would otherwise read it as the standby's SSH address.
if put "$etc/proxy.env" 0640 root:dumont <<EOF
# Written by scripts/deploy.sh; edits are overwritten on the next deploy.
DUMONT_PRIMARY=$gpu_url
DUMONT_STANDBY=$standby_url
DUMONT_LISTEN=$listen
DUMONT_ADMIN_TOKEN=$token
DUMONT_ASSETS_DIR=$prefix/share/dumont
DUMONT_HOOKS_BEFORE_FAILOVER="$(hook fence)"
DUMONT_HOOKS_BEFORE_FAILBACK="$(hook reverse)"
EOF
then changed=1; fi
if sed "s|/opt/dumont/|$prefix/|g" "$repo/deploy/systemd/dumont-proxy.service" \
  | put "$unit_dir/dumont-proxy.service" 0644 root:root; then
  changed=1
  run systemctl daemon-reload
fi
if [ $dry_run = 0 ] && systemctl is-enabled --quiet dumont-proxy.service 2>/dev/null \
  && systemctl is-active --quiet dumont-proxy.service; then
  if [ $changed = 1 ]; then run systemctl restart dumont-proxy.service; fi
else
  run systemctl enable --now dumont-proxy.service
fi
if [ $dry_run = 0 ]; then
  port=${listen##*:}
  for _ in $(seq 1 60); do
    if python3 -c "import urllib.request as r; r.urlopen('http://127.0.0.1:$port/__dumont/healthz', timeout=1)" 2>/dev/null; then
      echo "deploy: the proxy answers on port $port"; exit 0
    fi
    sleep 1
  done
  die "the proxy did not answer on port $port within 60 s: journalctl -u dumont-proxy"
fi
