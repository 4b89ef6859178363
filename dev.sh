#!/usr/bin/env bash
# The project's two commands, from a fresh clone:
#   ./dev.sh demo    the exporter on its built-in SMS Partner simulator (no account needed)
#   ./dev.sh test    the whole test suite (installs what it needs, Debian packages included)
#   ./dev.sh bench   the performance figures (docs/performance.md), under 2 minutes
# Other: ./dev.sh lint | venv | ha-zip (the Home Assistant integration's release archive)
set -euo pipefail
cd "$(dirname "$0")"

VENV=${SMSP_VENV:-.venv}
PY=${PYTHON:-python3}

venv() {
    # (Re)install the project when pyproject.toml changed: with its test dependencies (the
    # default), or alone ("runtime": what ./dev.sh demo needs). A test install serves both.
    local extra=${1:-test} stamp="$VENV/.installed" want have
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating virtual environment in $VENV" >&2
        if ! "$PY" -m venv "$VENV"; then
            # Debian's own python3 ships venv separately.
            rm -rf "$VENV"
            apt_install python3-venv
            "$PY" -m venv "$VENV"
        fi
    fi
    have=$(cat "$stamp" 2>/dev/null || true)
    if [ "$have" = "$want test" ] || [ "$have" = "$want $extra" ]; then
        return 0
    fi
    if [ "$extra" = runtime ]; then
        echo "==> installing smsp-exporter" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e .
    else
        echo "==> installing smsp-exporter and its test dependencies" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    fi
    echo "$want $extra" >"$stamp"
}

system_packages() {
    # The end-to-end and rule tests run a real Prometheus, promtool and Alertmanager.
    local missing=()
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null \
        || missing+=(prometheus-alertmanager)
    # The deploy/ tests: Debian's docker-compose v1 validates a compose file without an
    # engine ('docker-compose config'); systemd-analyze verifies the unit.
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    # The status page's test drives a real headless browser.
    command -v chromium >/dev/null || missing+=(chromium)
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_install "${missing[@]}"
}

homeassistant_venv() {
    # tests/test_homeassistant.py runs a real Home Assistant core: in its own virtual
    # environment (its pins clash with ours), (re)installed when its pin file changes.
    local venv=${SMSP_HA_VENV:-.venv-ha} pins=tests/homeassistant-requirements.txt want
    want=$(sha256sum "$pins" | cut -d' ' -f1)
    [ "$(cat "$venv/.installed" 2>/dev/null)" = "$want" ] && return 0
    echo "==> installing Home Assistant into $venv (takes a few minutes, once)" >&2
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$pins"
    echo "$want" >"$venv/.installed"
}

ha_zip() {
    # The Home Assistant integration as HACS installs it (hacs.json: zip_release): the files
    # of homeassistant/custom_components/smsp_exporter at the archive's root, to attach to a
    # GitHub release.
    local out=dist/smsp_exporter.zip
    mkdir -p dist
    rm -f "$out"
    "$PY" - "$out" <<'PYZIP'
import pathlib, sys, zipfile
src = pathlib.Path("homeassistant/custom_components/smsp_exporter")
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as archive:
    for path in sorted(src.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            archive.write(path, path.relative_to(src))
PYZIP
    echo "$out"
}

apt_install() {
    echo "==> installing Debian packages: $*" >&2
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "$@" >/dev/null
}

lint() {
    # homeassistant/: the Home Assistant integration; ruff only (Home Assistant is not in .venv
    # for mypy; its own tests run in .venv-ha, from tests/test_homeassistant_integration.py).
    "$VENV/bin/ruff" check smsp_exporter tests grafana benchmarks homeassistant
    "$VENV/bin/ruff" format --check smsp_exporter tests grafana benchmarks homeassistant
    "$VENV/bin/mypy"  # pyproject.toml, [tool.mypy]: the package, strict
}

case "${1:-}" in
    demo)
        shift
        venv runtime
        exec "$VENV/bin/smsp-exporter" --demo "$@"
        ;;
    test)
        shift
        venv
        system_packages
        homeassistant_venv
        lint
        # Every system program is installed now: a test that cannot find one fails instead
        # of skipping (tests/conftest.py, require_tool).
        SMSP_REQUIRE_TOOLS=1 exec "$VENV/bin/python" -m pytest "$@"
        ;;
    bench)
        shift
        venv
        exec "$VENV/bin/python" -m benchmarks.run "$@"
        ;;
    lint) venv; lint ;;
    ha-zip) ha_zip ;;
    venv) venv ;;
    *)
        echo "usage: ./dev.sh demo | test [pytest args] | bench [--quick] | lint | venv | ha-zip" >&2
        exit 64
        ;;
esac
