#!/usr/bin/env bash
# Install Debian's Chromium and its driver for the web app's browser tests (tests/test_web_browser.py).
# Playwright drives /usr/bin/chromium through executable_path; `playwright install` (which downloads a
# browser build of its own) is never needed. Without a browser those tests skip, saying why.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "install-browser: $(chromium --version 2>/dev/null | head -n1) already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Recommends stay on: they bring the fonts the page and its screenshots are drawn with.
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
echo "install-browser: $(chromium --version 2>/dev/null | head -n1) installed"
