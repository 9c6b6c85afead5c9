#!/usr/bin/env bash
# Installs what the project needs on a Debian 12 (bookworm) machine: QGIS 3.40 LTR from
# bookworm-backports, Xvfb for GUI tests, and a venv built on the system Python (the one QGIS embeds).
# Idempotent: a few seconds when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

APT_PACKAGES=(qgis python3-qgis qgis-providers xvfb xauth fonts-open-sans)
EXTRA_APT=("$@")   # optional extra Debian packages (e.g. otb-bin for the benchmark)

qgis_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' qgis 2>/dev/null || true)
  [[ "$v" == 1:3.40* || "$v" == 3.40* ]]
}

missing=()
for p in "${APT_PACKAGES[@]}" "${EXTRA_APT[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ! qgis_ok || [ ${#missing[@]} -gt 0 ]; then
  # QGIS 3.40 lives in bookworm-backports; reuse the mirror the machine already uses for bookworm.
  bp=/etc/apt/sources.list.d/bookworm-backports.sources
  if [ ! -f "$bp" ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    src=/etc/apt/sources.list.d/debian.sources
    if [ -f "$src" ]; then
      awk 'BEGIN{RS=""; ORS="\n\n"} /Suites:[^\n]*bookworm-updates/ {sub(/Suites:[^\n]*/, "Suites: bookworm-backports"); print}' "$src" \
        | $SUDO tee "$bp" >/dev/null
    else
      mirror=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list)
      echo "deb $mirror bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    fi
  fi
  echo "setup: installing QGIS 3.40 and system packages (a few minutes on a fresh machine)"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports qgis python3-qgis qgis-providers >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends xvfb xauth fonts-open-sans "${EXTRA_APT[@]}" >/dev/null
fi

# The venv sees QGIS's Python bindings, GDAL, numpy and scipy from Debian.
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements-dev.txt requirements-train.txt requirements-nodeps.txt constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@"; }
  pip_install -c constraints.txt -r requirements-dev.txt -r requirements-train.txt
  pip_install --no-deps -r requirements-nodeps.txt
  echo "$want" > "$stamp"
fi

# Real Sentinel-1 metadata for the import tests and benchmark: the IW GRDH manifest and annotations (geolocation grid)
# and the SLC / EW / WV manifests from the source distribution of xarray-sentinel 0.9.6 (Apache-2.0), without pixels.
s1=build/s1data
if [ ! -f "$s1/.done" ]; then
  echo "setup: Sentinel-1 test metadata (xarray-sentinel 0.9.6 source distribution)"
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" \
    xarray-sentinel==0.9.6 >/dev/null
  mkdir -p "$s1"
  tar -xzf "$tmp"/xarray_sentinel-0.9.6.tar.gz -C "$tmp" --wildcards '*/tests/data/S1*.SAFE/manifest.safe' \
    '*/tests/data/S1B_IW_GRDH_*.SAFE/annotation/*.xml'
  cp -r "$tmp"/xarray_sentinel-0.9.6/tests/data/S1*.SAFE "$s1"/
  rm -rf "$tmp"
  touch "$s1/.done"
fi
