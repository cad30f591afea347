# memlib.sh - sourced by the memory benchmarks: `run NAME ARGS...` runs $BIN ARGS under
# GNU time with a sampler of /proc/PID/status (peak RssAnon, RssFile, VmHWM every 0.1 s)
# and prints one line: exit status, wall time, max RSS, peak RssAnon, peak RssFile and
# the --max-memory estimate where the run printed one. Needs BIN and TMP set.

# sample PID: peak RssAnon and RssFile (kB) of the process while it runs
sample() {
    local pid=$1 out=$2 anon=0 file=0 hwm=0 a f h
    while [ -r "/proc/$pid/status" ]; do
        a=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        f=$(awk '/^RssFile:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        h=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        [ -n "$a" ] && [ "$a" -gt $anon ] && anon=$a
        [ -n "$f" ] && [ "$f" -gt $file ] && file=$f
        [ -n "$h" ] && [ "$h" -gt $hwm ] && hwm=$h
        sleep 0.1
    done
    echo "$anon $file $hwm" >"$out"
}

# run NAME ARGS...: one measured run
run() {
    local name=$1
    shift
    /usr/bin/time -v "$BIN" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    local tpid=$!
    local pid=
    for _ in $(seq 1 100); do
        pid=$(pgrep -P "$tpid" | head -1)
        [ -n "$pid" ] && break
        sleep 0.02
    done
    [ -n "$pid" ] && sample "$pid" "$TMP/$name.mem" &
    local spid=$!
    wait "$tpid"
    local rc=$?
    wait "$spid" 2>/dev/null
    anon=0 file=0 hwm=0
    [ -s "$TMP/$name.mem" ] && read -r anon file hwm <"$TMP/$name.mem"
    local maxrss wall est
    maxrss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TMP/$name.err")
    wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$TMP/$name.err")
    est=$(grep -o 'workspaces about [0-9.]* [A-Za-z]*' "$TMP/$name.err" | head -1 | sed 's/workspaces about //')
    printf '%-22s rc %d  wall %s  maxrss %.2f GiB  peak RssAnon %.2f GiB  peak RssFile %.2f GiB%s\n' "$name" "$rc" \
        "$wall" "$(echo "${maxrss:-0} / 1048576" | bc -l)" "$(echo "$anon / 1048576" | bc -l)" \
        "$(echo "$file / 1048576" | bc -l)" "${est:+  (estimate $est)}"
    [ $rc = 0 ] || grep -m2 "sinkscope" "$TMP/$name.err" | sed 's/^/    /'
}

