#!/usr/bin/env bash
# Install, when missing, the system tools that the browser and hub tests drive:
#   chromium (Debian), postgresql (Debian), configurable-http-proxy (npm, into .tools/).
# Idempotent and quiet when everything is present. Needs root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if ((${#need_apt[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing with apt: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .tools/node_modules/.bin/configurable-http-proxy ]; then
  echo "installing configurable-http-proxy (npm) into .tools/"
  mkdir -p .tools
  npm install --silent --no-audit --no-fund --prefix .tools configurable-http-proxy@4 >/dev/null
fi
