#!/usr/bin/env bash
# Runs `netc run` with the JIT engine under valgrind memcheck, on one thread and on two, for every
# seed network in nets/. Networks with a `res` hyperparameter run at a reduced resolution (RES,
# default 64); the others run at their full size. Any memcheck error fails the script.
#
#   scripts/valgrind.sh                 # every seed network
#   RES=96 scripts/valgrind.sh nets/mobilenet_v2.net
#
# Environment: RES (resolution of networks that take one), THREADS (default "1 2"),
# CARGO_TARGET_DIR (where the release binary is built; default target/).
#
# Flags: the JIT writes code to fresh anonymous executable pages at run time. Valgrind's default
# --smc-check=all-non-file already retranslates code from such pages (valgrind 3.19 finds no
# errors with default flags either); it is spelled out so an older default (`stack`) cannot turn
# the JIT code into false reports. --fair-sched=yes makes the threads take turns in order, which
# keeps the spinning barrier between kernel steps from wasting whole time slices.
#
# NETC_HEAP_BUFFERS=1 keeps the arena and the packed weights on the heap, sized exactly: netc
# otherwise maps them on whole (often huge) pages, and memcheck could not see an access past
# their ends into the rest of the last page.
set -euo pipefail
export NETC_HEAP_BUFFERS=1

cd "$(dirname "$0")/.."
RES="${RES:-64}"
THREADS="${THREADS:-1 2}"
TARGET="${CARGO_TARGET_DIR:-target}"

if ! command -v valgrind >/dev/null; then
    echo "valgrind not found; installing it with apt-get" >&2
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq valgrind
fi

cargo build --release --quiet
NETC="$TARGET/release/netc"

if [ "$#" -gt 0 ]; then
    nets=("$@")
else
    nets=(nets/*.net)
fi

failed=0
start=$SECONDS
for net in "${nets[@]}"; do
    set_args=()
    if grep -Eq '^net [A-Za-z_0-9]+\(.*\bres *:' "$net"; then
        set_args=(--set "res=$RES")
    fi
    for threads in $THREADS; do
        label="$net ${set_args[*]:-(full size)} --threads $threads"
        log="$(mktemp)"
        t0=$SECONDS
        if valgrind --tool=memcheck --error-exitcode=1 --smc-check=all-non-file --fair-sched=yes \
            --leak-check=no --track-origins=yes --quiet \
            "$NETC" run "$net" "${set_args[@]}" --engine jit --threads "$threads" --top 1 \
            >"$log" 2>&1; then
            echo "ok    $label  ($((SECONDS - t0)) s)"
        else
            echo "FAIL  $label  ($((SECONDS - t0)) s)"
            sed 's/^/      /' "$log"
            failed=1
        fi
        rm -f "$log"
    done
done
echo "total $((SECONDS - start)) s"
if [ "$failed" -ne 0 ]; then
    echo "memcheck reported errors" >&2
    exit 1
fi
echo "memcheck: no errors"
