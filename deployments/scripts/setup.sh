#!/usr/bin/env bash
# Installs what LinkEdge's tests and demo need on a fresh Debian machine with
# Go, as root: npm (to fetch the ONNX Runtime library from the npm registry),
# mosquitto (the second, independent MQTT broker for interop tests), a Docker
# Engine (for the container tests; started here if none answers), Debian's
# docker-registry (the tests push serving images to one on loopback),
# Debian's chromium (the fleet console's browser test drives it headless), and
# the ONNX Runtime library itself (cached under ~/.cache/linkedge). Safe to
# run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
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
# These packages start services on install; the tests start their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop mosquitto docker-registry >/dev/null 2>&1 || true; fi

# A Docker Engine for the image tests. Where none runs (a CI machine, a
# container), start one that needs no kernel networking set-up: images are
# built FROM scratch and containers use the host's network.
if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: starting dockerd"
    nohup dockerd --storage-driver=vfs --iptables=false --bridge=none >/tmp/linkedge-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /tmp/linkedge-dockerd.log" >&2; exit 1; }
  else
    echo "setup: no Docker Engine answers; the container tests will be skipped outside CI" >&2
  fi
fi

go run . setup
