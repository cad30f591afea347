# interrupt.sh - sourced by the resume tests (cli-resume.sh, cli-moe.sh).
#
# sks_interrupt OUT GLOB TRIES CMD...: runs CMD (which writes OUT, its parts in
# OUT.parts) in the background and kills it with SIGKILL as soon as a part file matching
# OUT.parts/GLOB appears. Returns 0 when a run was killed with a part written and no
# OUT; a run that finished before the kill is handed to the caller's on_finished OUT
# (which checks that its output is complete) and the next try starts; returns 1 after
# TRIES runs that all finished, 2 when a run died by itself without output. The running
# process id is in PID (for the caller's EXIT trap).
sks_interrupt() {
    local out=$1 glob=$2 tries=$3 attempt
    shift 3
    for attempt in $(seq 1 "$tries"); do
        rm -rf "$out" "$out.parts"
        "$@" 2>/dev/null &
        PID=$!
        for _ in $(seq 1 6000); do
            compgen -G "$out.parts/$glob" >/dev/null && break
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.005
        done
        kill -9 "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
        PID=
        if [ ! -e "$out" ]; then
            compgen -G "$out.parts/$glob" >/dev/null && return 0
            return 2
        fi
        on_finished "$out"
    done
    return 1
}
