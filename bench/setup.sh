#!/usr/bin/env bash
# Set up what the benchmark needs: the project's .venv (./scripts/setup) and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
  echo "bench/setup.sh: installing wrk with apt-get" >&2
  if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
INJIXO_BROWSER_TESTS=0 ./scripts/setup
