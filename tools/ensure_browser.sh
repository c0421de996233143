#!/usr/bin/env sh
# Install Debian's chromium for the headless-browser tests (tests/studies) if it is missing.
# Idempotent and quiet; exits 0 once /usr/bin/chromium exists. Never runs `playwright install`.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
if [ ! -x /usr/bin/chromium ]; then
    echo "ensure_browser: apt-get installed chromium but /usr/bin/chromium is missing" >&2
    exit 1
fi
exit 0
