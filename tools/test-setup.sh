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

# --- preview: headless Chromium for tests/test_preview_browser.py (Playwright drives the system
# browser; it downloads no browser of its own) ---
if ! have chromium && ! have chromium-browser; then
    apt_install chromium fonts-dejavu-core
fi

# --- streaming: Mono for tests/test_unity_sample.py (compiles and runs the Unity sample's plain C#)
# and Blender as a Python module (bpy) for tests/test_blender_addon.py ---
if ! have mcs || ! have mono; then
    apt_install mono-mcs mono-runtime
fi
# bpy 4.2 ships wheels for CPython 3.11 only and pins its own numpy, so it gets its own venv
# (.tools/bpy-venv, git-ignored); the tests run Blender there as a subprocess.
BPY_VENV="${BPY_VENV:-.tools/bpy-venv}"
if ! "$BPY_VENV/bin/python" -c "import bpy" >/dev/null 2>&1; then
    BPY_BASE=""
    if [ "$("$VENV_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "3.11" ]; then
        BPY_BASE="$("$VENV_PY" -c 'import sys; print(sys._base_executable)')"
    elif have python3.11; then
        BPY_BASE="$(command -v python3.11)"
    fi
    if [ -z "$BPY_BASE" ]; then
        echo "test-setup: no CPython 3.11 for bpy 4.2; Blender add-on tests will skip"
    else
        rm -rf "$BPY_VENV"
        if ! { "$BPY_BASE" -m venv "$BPY_VENV" \
                && "$BPY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
                    "bpy>=4.2,<4.3" >/dev/null 2>&1; }; then
            echo "test-setup: installing bpy failed; Blender add-on tests will skip"
            rm -rf "$BPY_VENV"
        fi
    fi
fi
