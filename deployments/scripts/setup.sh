#!/usr/bin/env bash
# Installs what LinkEdge's tests and demo need on a fresh Debian machine with
# Go, as root: npm (to fetch the ONNX Runtime library from the npm registry),
# mosquitto (the second, independent MQTT broker for interop tests), and the
# ONNX Runtime library itself (cached under ~/.cache/linkedge). Safe to run
# again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need ${need[*]}; run as root or install them with apt-get" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The broker package starts as a service on install; the tests start their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop mosquitto >/dev/null 2>&1 || true; fi

go run . setup
