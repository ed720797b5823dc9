# bench/e2e.sh: `scripts/bench e2e`, the product end to end (issue 7's Benchmark): a wispd of
# the release build on a temporary state directory (embedded file:// store), driven with the
# wisp CLI the way a person drives it.  Sourced by scripts/bench, whose helpers it uses (build,
# median, machine_line, doc_replace, cleanup, say, die, WORK, BUILD, ROOT).
#
#   scripts/bench e2e [--runs N] [--sprites N] [--no-docs]
#
# Figures (every one a wall-clock time around a `wisp` process, so the CLI's own start counts):
#   create      `wisp create` then `wisp exec NAME -- echo ready`, to that output, with the pool
#               refilled first (N runs)
#   exec        `wisp exec NAME true` on an awake sprite, 20 runs (target < 20 ms); and its
#               parts, 20 runs each: the CLI alone (`wisp exec` on a socket that is not there:
#               its start, its failed connect, its exit) and wispd's own time for the exec in
#               the guest (`wisp exec --json NAME true`'s "ms": EXEC sent to EXIT received)
#   warm wake   `wisp sleep NAME`, then `wisp exec NAME true` (the wake on first request)
#   cold wake   `wisp sleep --cold NAME`, then `wisp exec NAME true`; reported as missing when
#               this wispd refuses cold sleep
#   in a row    --sprites (20) creates back to back, no pause for the pool: p50, p90, p99 and
#               docs/e2e-create.png (gnuplot)
#   memory      the QEMUs' PSS and RSS (/proc) with those sprites awake and idle, warm asleep
#               and cold asleep, less the same sum once they are destroyed, per sprite; and
#               wispd's RSS
#
# The idle policy is switched off (idle-warm = 0, idle-cold = 0), so that only the benchmark
# puts sprites to sleep.

E2E_PLOT=$ROOT/docs/e2e-create.png

cmd_e2e() {
    local runs=5 sprites=20 docs=1
    while (($#)); do
        case $1 in
            --runs) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--runs needs a positive number"
                    runs=$2; shift ;;
            --sprites) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--sprites needs a positive number"
                       sprites=$2; shift ;;
            --no-docs) docs=0 ;;
            -h | --help) sed -n '1,/^$/s/^# \{0,1\}//p' "$ROOT/bench/e2e.sh"; exit 0 ;;
            *) usage >&2; exit 2 ;;
        esac
        shift
    done
    WORK=$(mktemp -d /tmp/wisp-bench.XXXXXX)
    # wispd first (it owns the QEMUs and nbdkit), then scripts/bench's cleanup with the status.
    # shellcheck disable=SC2154 # e2e_rc is set in the trap itself
    trap 'e2e_rc=$?; set +e; e2e_stop_wispd; (exit $e2e_rc); cleanup' EXIT
    trap 'exit 130' INT TERM
    LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
    command -v gnuplot >/dev/null || { say "installing gnuplot-nox (scripts/deps)"; "$ROOT/scripts/deps"; }
    command -v gnuplot >/dev/null || die "gnuplot is missing (scripts/deps installs gnuplot-nox)"
    build wispd
    build wisp
    build nbdkit-wisp-plugin
    build wisp-init
    E2E_WISP=$BUILD/pool/wisp

    e2e_start_wispd
    local t=$WORK/times
    mkdir -p "$t"

    say "create to first output, pool refilled first ($runs runs)"
    local i name
    for ((i = 1; i <= runs; i++)); do
        e2e_wait_pool 0
        name=c$i
        e2e_create_timed "$name" "$t/create.ms" "$t/create-first-output.ms"
        ((i == runs)) || e2e_wisp destroy "$name"
    done
    local s=c$runs

    say "wisp exec $s true, 20 runs"
    e2e_wisp exec "$s" true
    for ((i = 0; i < 20; i++)); do e2e_time "$t/exec.ms" e2e_wisp exec "$s" true; done
    say "its parts: the CLI alone, wispd's exec in the guest (20 runs each)"
    for ((i = 0; i < 20; i++)); do
        e2e_time "$t/exec-cli.ms" e2e_cli_alone "$s"
        "$E2E_WISP" exec --json "$s" true 2>>"$WORK/wisp.log" |
            sed -n 's/.*"ms" *: *\([0-9.]*\).*/\1/p' >>"$t/exec-guest.ms"
    done

    say "warm wake on first request ($runs runs)"
    for ((i = 0; i < runs; i++)); do
        e2e_time "$t/warm-sleep.ms" e2e_wisp sleep "$s"
        sleep 1
        e2e_time "$t/warm-wake.ms" e2e_wisp exec "$s" true
    done

    say "cold wake on first request ($runs runs)"
    COLD_WHY=
    if ! "$E2E_WISP" sleep --cold "$s" >"$WORK/cold-probe.txt" 2>&1; then
        COLD_WHY=$(paste -sd' ' "$WORK/cold-probe.txt")
        say "cold sleep refused: $COLD_WHY"
    else
        e2e_wisp exec "$s" true
        for ((i = 0; i < runs; i++)); do
            e2e_time "$t/cold-sleep.ms" e2e_wisp sleep --cold "$s"
            sleep 1
            e2e_time "$t/cold-wake.ms" e2e_wisp exec "$s" true
        done
    fi
    e2e_wisp destroy "$s"

    say "$sprites creates in a row"
    for ((i = 1; i <= sprites; i++)); do
        e2e_create_timed "r$i" "$t/row-create.ms" "$t/row-first-output.ms"
    done
    e2e_wait_pool "$sprites"
    sleep 10 # idle: their boot-time work done
    e2e_memory awake
    say "warm sleep of the $sprites"
    for ((i = 1; i <= sprites; i++)); do e2e_wisp sleep "r$i"; done
    sleep 2
    e2e_memory warm
    if [[ -z $COLD_WHY ]]; then
        say "cold sleep of the $sprites"
        for ((i = 1; i <= sprites; i++)); do e2e_wisp exec "r$i" true; e2e_wisp sleep --cold "r$i"; done
        sleep 2
        e2e_memory cold
    fi
    say "destroying the $sprites"
    for ((i = 1; i <= sprites; i++)); do e2e_wisp destroy "r$i"; done
    e2e_wait_pool 0
    sleep 5
    e2e_memory none
    # wispd's own view of each create: "ACCOUNT/NAME: claimed in MS ms (attach MS)".
    sed -n 's|.* default/c[0-9]*: claimed in \([0-9.]*\) ms.*|\1|p' "$WORK/wispd.log" >"$t/create-claim.ms"
    sed -n 's|.* default/r[0-9]*: claimed in \([0-9.]*\) ms.*|\1|p' "$WORK/wispd.log" >"$t/row-claim.ms"

    LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
    e2e_plot "$t/row-first-output.ms" "$t/row-create.ms" "$WORK/e2e-create.png"
    local body=$WORK/body.md
    e2e_report "$runs" "$sprites" >"$body"
    cat "$body"
    if ((docs)); then
        doc_replace e2e "$body"
        cp "$WORK/e2e-create.png" "$E2E_PLOT"
        say "docs/benchmarks.md and ${E2E_PLOT#"$ROOT"/} updated"
    fi
}

# e2e_wisp ARGS...: the CLI on the benchmark's wispd; output to the log, failure fatal.
e2e_wisp() {
    printf '$ wisp %s\n' "$*" >>"$WORK/wisp.log"
    "$E2E_WISP" "$@" >>"$WORK/wisp.log" 2>&1 || { tail -n 5 "$WORK/wisp.log" >&2; die "wisp $* failed"; }
}

# e2e_cli_alone NAME: `wisp exec NAME true` on a socket that is not there, which fails at its
# connect: the CLI's own start and exit.
e2e_cli_alone() {
    "$E2E_WISP" exec --socket "$WORK/no-such-wispd.sock" "$1" true >/dev/null 2>&1 || true
}

# e2e_time FILE CMD...: runs CMD, appends its wall-clock milliseconds to FILE.
e2e_time() {
    local file=$1 t0 t1
    shift
    t0=$EPOCHREALTIME
    "$@"
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }' >>"$file"
}

# e2e_create_timed NAME CREATE_FILE FIRST_OUTPUT_FILE: `wisp create NAME`, then `wisp exec NAME
# -- echo ready`, which must print "ready"; the create's time and the time to that output.
e2e_create_timed() {
    local name=$1 t0 t1 t2 out
    t0=$EPOCHREALTIME
    e2e_wisp create "$name"
    t1=$EPOCHREALTIME
    out=$("$E2E_WISP" exec "$name" -- echo ready 2>>"$WORK/wisp.log") || die "wisp exec $name failed"
    t2=$EPOCHREALTIME
    [[ $out == ready ]] || die "wisp exec $name -- echo ready printed '$out'"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }' >>"$2"
    awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }' >>"$3"
}

# Starts wispd on $WORK/state with the image built there; waits for its socket.
e2e_start_wispd() {
    E2E_STATE=$WORK/state
    mkdir -p "$E2E_STATE"
    say "the VM image"
    "$ROOT/vm-images/build-image" "$E2E_STATE/image" --wisp-init "$BUILD/vm-images/agent/wisp-init" \
        >"$WORK/image.log" 2>&1 || { tail -n 20 "$WORK/image.log" >&2; die "build-image failed"; }
    printf '[wispd]\nidle-warm = 0\nidle-cold = 0\n' >"$WORK/wispd.conf"
    export WISP_SOCKET=$E2E_STATE/wispd.sock
    unset WISP_TOKEN
    say "starting wispd (state $E2E_STATE)"
    local t0=$EPOCHREALTIME i
    WISP_LOG_LEVEL=info "$BUILD/pool/wispd" --config "$WORK/wispd.conf" --state-dir "$E2E_STATE" \
        </dev/null >"$WORK/wispd.log" 2>&1 &
    E2E_WISPD_PID=$!
    for ((i = 0; i < 6000; i++)); do
        [[ -S $WISP_SOCKET ]] && break
        kill -0 "$E2E_WISPD_PID" 2>/dev/null || { tail -n 20 "$WORK/wispd.log" >&2; die "wispd exited"; }
        sleep 0.1
    done
    [[ -S $WISP_SOCKET ]] || die "wispd did not start within 600 s (see $WORK/wispd.log)"
    E2E_START_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    say "wispd up in $E2E_START_S s"
}

e2e_stop_wispd() {
    [[ -n ${E2E_WISPD_PID:-} ]] || return 0
    kill -TERM "$E2E_WISPD_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 3000; i++)); do
        kill -0 "$E2E_WISPD_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$E2E_WISPD_PID" 2>/dev/null; then
        say "wispd did not stop within 300 s of SIGTERM: killing it"
        kill -KILL "$E2E_WISPD_PID" 2>/dev/null || true
    fi
    wait "$E2E_WISPD_PID" 2>/dev/null || true
    E2E_WISPD_PID=
}

# e2e_qemus: the pids of this wispd's QEMUs (their command lines name its state directory).
e2e_qemus() {
    local pid cmd
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || continue
        [[ ${cmd%% *} == *qemu-system* && $cmd == *"$E2E_STATE/"* ]] && echo "$pid"
    done
    return 0
}

# e2e_wait_pool LIVE: waits until wispd runs LIVE sprites' QEMUs plus the pool's 2 (the refill
# launches a member's QEMU, then restores the template into it: 2 s more cover that here).
e2e_wait_pool() {
    local i
    for ((i = 0; i < 600; i++)); do
        (($(e2e_qemus | wc -l) >= $1 + 2)) && break
        sleep 0.1
    done
    ((i < 600)) || say "the pool did not refill within 60 s"
    sleep 2
}

# e2e_memory LABEL: appends "LABEL qemus pss_kib rss_kib wispd_rss_kib" to $WORK/memory: the
# sums over the QEMUs of this wispd.
e2e_memory() {
    local pid pss=0 rss=0 n=0 p r wrss
    for pid in $(e2e_qemus); do
        p=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
        r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        pss=$((pss + ${p:-0})) rss=$((rss + ${r:-0})) n=$((n + 1))
    done
    wrss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$E2E_WISPD_PID/status")
    echo "$1 $n $pss $rss $wrss" >>"$WORK/memory"
    say "memory ($1): $n QEMUs, PSS $((pss / 1024)) MiB, RSS $((rss / 1024)) MiB; wispd RSS $((wrss / 1024)) MiB"
}

# e2e_pct P: the P-th percentile (nearest rank) of the numbers on stdin.
e2e_pct() {
    sort -g | awk -v p="$1" '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        i = int((p / 100) * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR
        printf "%.1f\n", v[i] }'
}

# e2e_per_sprite LABEL FIELD SPRITES: (LABEL's sum - the sum with none) / SPRITES, in MiB.
e2e_per_sprite() {
    awk -v l="$1" -v f="$2" -v n="$3" '$1 == l { x = $f } $1 == "none" { b = $f }
        END { if (x == "") { print "—"; exit }
              v = (x - b) / n / 1024; if (v > -0.05 && v < 0.05) v = 0; printf "%.1f\n", v }' "$WORK/memory"
}

# e2e_plot FIRST_OUTPUT CREATE PNG: each create in order, with the percentiles of the time to
# first output as lines.
e2e_plot() {
    local data=$WORK/plot.dat p50 p90 p99 png=$3
    paste <(seq 1 "$(wc -l <"$1")") "$1" "$2" >"$data"
    p50=$(e2e_pct 50 <"$1") p90=$(e2e_pct 90 <"$1") p99=$(e2e_pct 99 <"$1")
    gnuplot <<EOF || die "gnuplot failed"
set terminal pngcairo size 720,360 font "sans,9"
set output "$png"
set title "wisp create, $(wc -l <"$1") in a row (QEMU TCG, file:// store)"
set xlabel "sprite"
set ylabel "ms"
set xrange [0.5:$(wc -l <"$1").5]
set xtics 1
set yrange [0:*]
set key below horizontal
set grid ytics
set boxwidth 0.7
set style fill solid 0.5
plot "$data" using 1:2 with boxes lc rgb "#4477aa" title "create to first output", \
     "$data" using 1:3 with linespoints pt 7 ps 0.6 lc rgb "#222222" title "wisp create alone", \
     $p50 with lines dt 2 lc rgb "#228833" title "p50 $p50 ms", \
     $p90 with lines dt 2 lc rgb "#ccbb44" title "p90 $p90 ms", \
     $p99 with lines dt 2 lc rgb "#ee6677" title "p99 $p99 ms"
EOF
}

# e2e_row NAME FILE: one table row "| NAME | median | p90 | samples |".
e2e_row() {
    if [[ -s $2 ]]; then
        printf '| %s | %s | %s | %s |\n' "$1" "$(median <"$2")" "$(e2e_pct 90 <"$2")" "$(wc -l <"$2")"
    else
        printf '| %s | not measured | | 0 |\n' "$1"
    fi
}

e2e_report() {
    local runs=$1 sprites=$2 t=$WORK/times
    echo "## End to end: wispd and the wisp CLI (scripts/bench e2e)"
    echo
    echo "\`scripts/bench e2e\` (bench/e2e.sh, release build): wispd on a fresh state directory with"
    echo "the embedded \`file://\` store, a warm pool of 2, 256 MiB and 1 vCPU per sprite, QEMU microvm"
    echo "under TCG, the idle policy off. Every figure is the wall-clock time of \`wisp\` processes"
    echo "talking to wispd over its unix socket, the CLI's own start included."
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(machine_line); load average $LOAD_START at the start, $LOAD_END at the end (other work shares these cores)"
    echo "- Wisp $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown); wispd's first start (base disk import, template) took $E2E_START_S s"
    echo
    echo "| figure | median (ms) | p90 (ms) | samples |"
    echo "| --- | ---: | ---: | ---: |"
    e2e_row "**create to first output**: \`wisp create\`, then \`wisp exec NAME -- echo ready\` (the pool refilled first)" "$t/create-first-output.ms"
    e2e_row "\`wisp create\` alone (the same runs)" "$t/create.ms"
    e2e_row "wispd's claim in those creates (its log: a pool member taken, the disk cloned and attached)" "$t/create-claim.ms"
    e2e_row "**\`wisp exec NAME true\`** on an awake sprite (target < 20 ms)" "$t/exec.ms"
    e2e_row "its part: the CLI alone (\`wisp exec\` on a socket that is not there)" "$t/exec-cli.ms"
    e2e_row "its part: wispd's exec in the guest, TCG (\`exec --json\`'s \"ms\")" "$t/exec-guest.ms"
    e2e_row "\`wisp sleep NAME\` (warm)" "$t/warm-sleep.ms"
    e2e_row "**wake from warm sleep on first request** (\`wisp exec NAME true\`)" "$t/warm-wake.ms"
    if [[ -z $COLD_WHY ]]; then
        e2e_row "\`wisp sleep --cold NAME\`" "$t/cold-sleep.ms"
        e2e_row "**wake from cold sleep on first request** (\`wisp exec NAME true\`)" "$t/cold-wake.ms"
    else
        echo "| wake from cold sleep | not measured: \`wisp sleep --cold\` was refused ($COLD_WHY) | | 0 |"
    fi
    echo
    echo "$sprites sprites created in a row, back to back (the pool of 2 empties and is refilled"
    echo "while they come), each \`wisp create\` then \`wisp exec NAME -- echo ready\`:"
    echo
    echo "| $sprites in a row | p50 (ms) | p90 (ms) | p99 (ms) |"
    echo "| --- | ---: | ---: | ---: |"
    local f
    for f in "create to first output:row-first-output" "wisp create alone:row-create" \
        "wispd's claim (its log):row-claim"; do
        printf '| %s | %s | %s | %s |\n' "${f%%:*}" "$(e2e_pct 50 <"$t/${f#*:}.ms")" \
            "$(e2e_pct 90 <"$t/${f#*:}.ms")" "$(e2e_pct 99 <"$t/${f#*:}.ms")"
    done
    echo
    echo "With $sprites samples, p99 is the slowest one."
    echo
    echo "![$sprites creates in a row](e2e-create.png)"
    echo
    echo "Host memory per sprite: the sum over this wispd's QEMUs of PSS (\`/proc/PID/smaps_rollup\`)"
    echo "and of RSS, with the $sprites sprites in each state, less the same sum after they were"
    echo "destroyed (the pool's members only), divided by $sprites. A clone maps the template's RAM"
    echo "file shared, so PSS is the fairer figure; RSS counts shared pages in every QEMU."
    echo
    echo "| state of the $sprites sprites | PSS per sprite (MiB) | RSS per sprite (MiB) | wispd RSS (MiB) |"
    echo "| --- | ---: | ---: | ---: |"
    local label what
    for label in awake warm cold; do
        case $label in
            awake) what="awake and idle" ;;
            warm) what="warm asleep (paused)" ;;
            cold) what="cold asleep" ;;
        esac
        if grep -q "^$label " "$WORK/memory"; then
            printf '| %s | %s | %s | %s |\n' "$what" "$(e2e_per_sprite "$label" 3 "$sprites")" \
                "$(e2e_per_sprite "$label" 4 "$sprites")" \
                "$(awk -v l="$label" '$1 == l { printf "%.1f", $5 / 1024 }' "$WORK/memory")"
        else
            printf '| %s | not measured (no cold sleep) | | |\n' "$what"
        fi
    done
    printf '| none (pool only: %s QEMUs, %s MiB PSS in all) | | | %s |\n' \
        "$(awk '$1 == "none" { print $2 }' "$WORK/memory")" \
        "$(awk '$1 == "none" { printf "%.0f", $3 / 1024 }' "$WORK/memory")" \
        "$(awk '$1 == "none" { printf "%.1f", $5 / 1024 }' "$WORK/memory")"
    echo
    echo "Published anchors (not measured here): Fly Sprites create in 1–2 s and resume warm in"
    echo "100–500 ms; E2B starts a sandbox in about 150 ms on KVM. This machine runs QEMU under TCG"
    echo "(no usable /dev/kvm) on 2 shared cores, which slows the guest side of every figure. Next"
    echo "to them, medians from this run: create to first output $(median <"$t/create-first-output.ms") ms with the"
    echo "pool refilled and $(e2e_pct 50 <"$t/row-first-output.ms") ms in a row (Fly 1–2 s, E2B about 150 ms); a wake"
    printf '%s' "from warm sleep on first request $(median <"$t/warm-wake.ms") ms (Fly 100–500 ms)"
    if [[ -z $COLD_WHY ]]; then
        echo ", from cold sleep $(median <"$t/cold-wake.ms") ms."
    else
        echo "; cold sleep was not measured."
    fi
    echo
    echo '```sh'
    echo "scripts/bench e2e --runs $runs --sprites $sprites"
    echo '```'
}
