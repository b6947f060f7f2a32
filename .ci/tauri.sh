#!/usr/bin/env bash
# The Tauri example, compiled and run for real (issue 17): the Rust plugin's unit tests and
# clippy, the app built with its frontend embedded, and the end-to-end test of the running app
# under Xvfb with tauri-driver + WebKitWebDriver. Idempotent, runs as root with no stdin:
# installs only what is missing. Usage: .ci/tauri.sh <frozen onefile sidecar>
set -euo pipefail
cd "$(dirname "$0")/.."
onefile=${1:?usage: .ci/tauri.sh <frozen onefile sidecar binary>}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/taskmill/cargo-target}
export PATH="$HOME/.cargo/bin:$PATH"
total=$SECONDS
stage() { echo "ci/tauri: $1 took $((SECONDS - t)) s"; }

# System packages: WebKitGTK (build + WebKitWebDriver) and Xvfb.
t=$SECONDS
pkgs=(libwebkit2gtk-4.1-dev build-essential libssl-dev libayatana-appindicator3-dev librsvg2-dev
    webkit2gtk-driver xvfb xauth)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "ci/tauri: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
stage "apt packages"

t=$SECONDS
if ! command -v tauri-driver >/dev/null; then
    cargo install tauri-driver --locked
fi
stage "tauri-driver"

# The sidecar where tauri.conf.json's externalBin (binaries/taskmill-sidecar) expects it:
# binaries/taskmill-sidecar-<target triple> (build_sidecar.py already writes it there).
triple=$(rustc -vV | sed -n 's/^host: //p')
bin=tauri-example/src-tauri/binaries/taskmill-sidecar-$triple
if [ "$(realpath "$onefile")" != "$(realpath -m "$bin")" ]; then
    mkdir -p "$(dirname "$bin")"
    cp "$onefile" "$bin"
fi

cd tauri-example
t=$SECONDS
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build >/dev/null
stage "frontend (vite build)"

# One feature set for every cargo command, so that the dependencies are built once.
features=(--workspace --features taskmill-example/custom-protocol)
t=$SECONDS
cargo build "${features[@]}"
stage "cargo build"
t=$SECONDS
cargo test "${features[@]}"
stage "cargo test"
t=$SECONDS
cargo fmt --all --check
cargo clippy "${features[@]}" --all-targets -- -D warnings
stage "cargo fmt + clippy"

t=$SECONDS
# Seen once in ~28 local runs: the test stalled (before the step marks and the per-command
# timeout existed) and was not reproduced since. One fresh retry; the log names the step.
app_e2e() {
    TASKMILL_APP_BIN="$CARGO_TARGET_DIR/debug/taskmill-example" \
    TASKMILL_SCREENSHOT="${TMPDIR:-/tmp}/taskmill-app-real.png" \
        xvfb-run -a -s "-screen 0 1280x800x24" npm run test:app
}
app_e2e || { echo "ci/tauri: real-app e2e failed once; retrying from scratch"; app_e2e; }
stage "real-app e2e"
echo "ci/tauri: all took $((SECONDS - total)) s"
