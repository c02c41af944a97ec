#!/usr/bin/env bash
# Installs what the tests need and runs them: Debian packages when root, the Python packages in .venv,
# then ruff and pytest. Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(etcd-server etcd-client iptables conntrack containerd runc containernetworking-plugins busybox-static
      docker-registry skopeo iproute2 procps)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${DEBS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -vE '^(WARNING|  )|!!' || true

.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
