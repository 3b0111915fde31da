#!/usr/bin/env bash
# Installs what tests/test_web.py drives: Debian's chromium, and a small CJK font so that the
# page's screenshots show hanzi rather than empty boxes. Idempotent; run as root (CI is), or
# with sudo available. Playwright itself comes with the dev extra and never downloads a browser.
#   bash scripts/install_browser.sh
set -euo pipefail
PACKAGES=(chromium fonts-wqy-microhei)

missing=()
command -v chromium >/dev/null || missing+=(chromium)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_browser: ${PACKAGES[*]} already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install_browser: no apt-get here; install ${missing[*]} yourself (tests/test_web.py" \
       "skips without chromium)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install_browser: run as root to apt-get install" \
                                        "${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "install_browser: installing ${missing[*]}"
$SUDO apt-get update -qq
# Another apt run on the machine holds the lock for a while: wait for it rather than fail.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
  -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
chromium --version 2>/dev/null
