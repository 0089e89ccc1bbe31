#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for this project, then a virtualenv with tox in .venv.
# The emulated backend needs iptables and iproute2 (network namespaces, veth, capture rules) and a system
# python3 that uid 1337 may execute (a replaced sidecar runs as the proxy user); the browser test of the `site`
# pages needs Debian's chromium and chromium-driver. Idempotent: a second run
# installs nothing.
set -euo pipefail
cd "$(dirname "$0")"

TOX_VERSION=4.67.15
need=()
command -v iptables-restore >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
# HAProxy: a real third-party proxy the suite's own tests put under the harness (tests/test_haproxy.py).
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
# Headless Chromium and its driver: tests/test_site_browser.py opens the `site` pages in a real browser.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ -x /usr/bin/python3 ] || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ "${#need[@]}" -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: missing ${need[*]}; run as root, or first: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "setup.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/tox ] || ! .venv/bin/tox --version 2>/dev/null | grep -q "^${TOX_VERSION} "; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "tox==${TOX_VERSION}"
fi
echo "setup.sh: ready (tox $(.venv/bin/tox --version | cut -d' ' -f1), $(iptables --version))"
