#!/usr/bin/env bash
# System packages the test suite needs: Debian's Chromium (for the browser
# test; Playwright's own browser download does not work offline), a CJK font
# so screenshots of the Chinese UI are legible, HAProxy (the failover test and
# `haproxy -c`), Prometheus (its `promtool` checks and unit-tests the alert
# rules and scrape config) and systemd (`systemd-analyze verify` of the unit). Idempotent: installs only what is missing.
set -euo pipefail
need=()
lean=()  # installed without recommends: prometheus would pull in exporters we never run
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
# No grep -q here: with pipefail, -q exiting early kills fc-list with SIGPIPE and fails the check.
fc-list 2>/dev/null | grep -i "wenquanyi\|noto sans cjk" >/dev/null || need+=(fonts-wqy-zenhei)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || lean+=(systemd)  # verifies ops/deploy/systemd
[ ${#need[@]} -eq 0 ] && [ ${#lean[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: installing ${need[*]} ${lean[*]} needs root (apt-get)" >&2; exit 1; }
  SUDO=sudo
fi
echo "Installing system packages: ${need[*]} ${lean[*]}"
$SUDO apt-get update -qq
apt_install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
[ ${#lean[@]} -eq 0 ] || apt_install --no-install-recommends "${lean[@]}"

