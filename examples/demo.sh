#!/usr/bin/env bash
# The main job on the built-in defaults: build the example release, serve it on 127.0.0.1,
# install from it with pip into a scratch venv, and import what was installed.
set -euo pipefail
cd "$(dirname -- "$0")/.."
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x .venv/bin/ipwhl ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --isolated --disable-pip-version-check -e .
fi
store=${IPWHL_STORE:-store}
echo "== ipwhl build examples/release.toml (store: $store)"
cid=$(.venv/bin/ipwhl build examples/release.toml --store "$store")
echo "release: $cid"
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/ipwhl serve --store "$store" --port "$port" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$scratch"' EXIT
scratch=$(mktemp -d)
index="http://127.0.0.1:$port/ipfs/$cid/simple/"
.venv/bin/python - "$index" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2).read()
        break
    except OSError:
        time.sleep(0.1)
PY
echo "== pip install --index-url $index requests[socks] pyyaml"
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --isolated --disable-pip-version-check --index-url "$index" "requests[socks]" pyyaml
"$scratch/venv/bin/python" - <<'PY'
import requests, socks, urllib3, yaml
print(f"imported requests {requests.__version__}, urllib3 {urllib3.__version__}, "
      f"PySocks {socks.__version__}, PyYAML {yaml.__version__} from the ipwhl release")
PY
echo "== open http://127.0.0.1:$port/ipfs/$cid/ for the release's page"
