#!/usr/bin/env bash
# Installs the system parts some tests need (each section skips itself when already present or
# when the platform cannot have it; the tests that need a part skip with a reason when it is absent).
# Called by `make test` before pytest. Safe to run repeatedly.
set -u
VENV_PY="${VENV_PY:-.venv/bin/python}"

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
    # apt_install PKG... : install Debian packages when running as root with apt-get available.
    if ! have apt-get || [ "$(id -u)" != "0" ]; then
        echo "test-setup: cannot install $* (need root and apt-get); dependent tests will skip"
        return 0
    fi
    if [ ! -f /tmp/.avatarlink-apt-updated ]; then
        apt-get update -qq >/dev/null 2>&1 && touch /tmp/.avatarlink-apt-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
        || echo "test-setup: apt-get install $* failed; dependent tests will skip"
}

# --- sections added by each feature below ---
