#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/browser) and the UI bench: Playwright drives
# /usr/bin/chromium and downloads no browser. Installs the `chromium` package with apt-get
# when /usr/bin/chromium is missing (sudo when not root); does nothing when it is there.
# Fails loudly (exit 1, saying why) when it cannot install it.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [[ -x "$CHROMIUM" ]]; then
    exit 0
fi
echo "browser.sh: $CHROMIUM is missing; installing Debian's chromium with apt-get" >&2
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser.sh: no apt-get on this machine: install Chromium so that $CHROMIUM exists" >&2
    exit 1
fi
sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "browser.sh: not root and no sudo: run 'apt-get install -y chromium' as root" >&2
        exit 1
    fi
    sudo=(sudo)
fi
if ! "${sudo[@]}" apt-get update || \
        ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; then
    echo "browser.sh: apt-get could not install chromium (see above)" >&2
    exit 1
fi
if [[ ! -x "$CHROMIUM" ]]; then
    echo "browser.sh: the chromium package is installed but $CHROMIUM is still missing" >&2
    exit 1
fi
"$CHROMIUM" --version >&2 || true
