#!/usr/bin/env bash
# The system packages synscale needs: what FFCV compiles against, and WordNet
# 3.0 (wordnet-base), which tools/build_class_metadata.py reads. Installed
# with apt-get when they are missing and we are root; otherwise we say
# exactly what to run.
set -euo pipefail
PKGS=(pkg-config libopencv-dev libturbojpeg0-dev wordnet-base)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "synscale: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "synscale: needs these system packages: ${missing[*]}" >&2
  echo "  run:  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
