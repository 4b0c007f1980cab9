#!/bin/sh
# Install the Debian packages the project needs, when missing: as root through apt-get (after an
# `apt-get update`, which a new machine needs), otherwise one line saying what to install.
# Usage: scripts/system-deps.sh [chromium] [nginx] [other commands named as their package]
set -eu
need=""
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need="$need python3-venv"
command -v node >/dev/null 2>&1 || need="$need nodejs"
command -v npm >/dev/null 2>&1 || need="$need npm"
for extra in "$@"; do
  case "$extra" in
    chromium) [ -x /usr/bin/chromium ] || need="$need chromium" ;;
    nginx) [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need="$need nginx" ;;
    *) command -v "$extra" >/dev/null 2>&1 || need="$need $extra" ;;
  esac
done
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian packages:$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
  else
    echo "Missing:$need. Install them with: sudo apt-get install$need" >&2
    exit 1
  fi
fi
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' || {
  echo "Node.js >= 20.19 is required by the dev IdP (oidc-provider); found $(node --version)." >&2
  exit 1
}
