#!/bin/bash
# logwrap.sh - a runc-compatible "runtime" that logs every call, then runs the
# real runtime.  Use it wherever an engine wants a runtime path.
#
#   LOGWRAP_LOG   file to append one JSON line per call to (default /dev/null)
#   LOGWRAP_REAL  real runtime (default: runc found in PATH, else /usr/sbin/runc)
#   LOGWRAP_SAVE  optional dir: copy each bundle config.json (create/run) and
#                 each exec --process file there, named <seq>-<caller>-<verb>-<id>.json
#
# For calls whose stdio is never handed to a container (state, ps, list, kill,
# delete, start, pause, resume, update, features, --version, checkpoint...)
# the real runtime is run as a child so the line also records exit status,
# stdout (first 4 KiB) and stderr; stdout/stderr are replayed byte-for-byte.
# For everything else (create, run, exec, events, ...) the wrapper logs first and
# then exec()s the real runtime, so the pid, fds and tty are exactly the
# caller's.  One line per call either way ("mode":"exec" or "mode":"child").

LOG=${LOGWRAP_LOG:-/dev/null}
REAL=${LOGWRAP_REAL:-}
if [ -z "$REAL" ]; then
    REAL=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v runc) || REAL=/usr/sbin/runc
fi
# Never recurse into ourselves.
if [ "$(readlink -f "$REAL")" = "$(readlink -f "$0")" ]; then
    echo "logwrap: LOGWRAP_REAL points at the wrapper itself" >&2; exit 127
fi

js() {  # JSON string escape of $1 (no surrounding quotes)
    local s=$1
    s=${s//\\/\\\\}; s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}; s=${s//$'\t'/\\t}
    s=${s//$'\e'/\\u001b}
    printf '%s' "$s"
}
jarr() {  # JSON array of the arguments
    local out="" a
    for a in "$@"; do out+="${out:+,}\"$(js "$a")\""; done
    printf '[%s]' "$out"
}
fdkind() {  # describe fd $1 of the wrapper process (by its /proc link, so it
            # is safe to call from a $(...) subshell)
    local t
    t=$(readlink "/proc/$$/fd/$1" 2>/dev/null) || { printf 'closed'; return; }
    case $t in
        /dev/pts/*|/dev/tty*|/dev/console|/dev/ptmx) printf 'tty:%s' "$t" ;;
        pipe:*) printf 'pipe' ;;
        socket:*) printf 'socket' ;;
        /dev/null) printf 'null' ;;
        *) printf 'file:%s' "$t" ;;
    esac
}

# ---- parse argv: global flags, verb, verb args --------------------------------
globals=(); verb=""; rest=()
args=("$@"); i=0; n=${#args[@]}
while [ "$i" -lt "$n" ]; do
    a=${args[$i]}
    case $a in
        --root|--log|--log-format|--criu|--rootless)
            globals+=("$a" "${args[$((i+1))]}"); i=$((i+2)); continue ;;
        -*) globals+=("$a"); i=$((i+1)); continue ;;
        *) verb=$a; rest=("${args[@]:$((i+1))}"); break ;;
    esac
done

# bundle / process file / console socket / pid file / container id
bundle=""; procfile=""; cid=""
j=0; m=${#rest[@]}
while [ "$j" -lt "$m" ]; do
    a=${rest[$j]}
    case $a in
        --bundle|-b) bundle=${rest[$((j+1))]}; j=$((j+2)); continue ;;
        --bundle=*|-b=*) bundle=${a#*=} ;;
        --process|-p) procfile=${rest[$((j+1))]}; j=$((j+2)); continue ;;
        --process=*|-p=*) procfile=${a#*=} ;;
        --console-socket|--pid-file|--preserve-fds|--cwd|--env|-e|--user|-u|--additional-gids|-g|--cap|-c|--process-label|--apparmor|--cgroup|--signal|--format|-f|--image-path|--work-path|--parent-path|--page-server|--manage-cgroups-mode|--empty-ns|--status-fd|--lazy-pages|-r|--resources|--interval)
            j=$((j+2)); continue ;;
        -*) ;;
        *) [ -z "$cid" ] && cid=$a ;;
    esac
    j=$((j+1))
done
[ "$verb" = create ] || [ "$verb" = run ] && [ -z "$bundle" ] && bundle=$PWD

caller=$(tr -d '\n' < "/proc/$PPID/comm" 2>/dev/null)
caller_args=$(tr '\0' ' ' < "/proc/$PPID/cmdline" 2>/dev/null | head -c 2000)
fd0=$(fdkind 0) fd1=$(fdkind 1) fd2=$(fdkind 2)
t0=$(date +%s.%N)

# ---- optional copies of config.json / process.json -----------------------------
saved=""
if [ -n "${LOGWRAP_SAVE:-}" ]; then
    mkdir -p "$LOGWRAP_SAVE" 2>/dev/null
    seq=$(date +%s%N)
    if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
        saved="$LOGWRAP_SAVE/$seq-$caller-$verb-${cid:-x}-config.json"
        cp "$bundle/config.json" "$saved" 2>/dev/null
    fi
    if [ -n "$procfile" ] && [ -f "$procfile" ]; then
        saved="$LOGWRAP_SAVE/$seq-$caller-$verb-${cid:-x}-process.json"
        cp "$procfile" "$saved" 2>/dev/null
    fi
fi

# ---- environment of interest ---------------------------------------------------
envj=""
for k in XDG_RUNTIME_DIR NOTIFY_SOCKET LISTEN_FDS LISTEN_PID HOME PATH TMPDIR \
         GOMAXPROCS LANG container _LIBCONTAINER_INITPIPE _LIBCONTAINER_SYNCPIPE \
         _LIBCONTAINER_LOGPIPE _LIBCONTAINER_STATEDIR RUNC_DEBUG; do
    if [ -n "${!k+x}" ]; then envj+="${envj:+,}\"$k\":\"$(js "${!k}")\""; fi
done
envkeys=$(compgen -e | sort | tr '\n' ' ')
# Inherited fds above 2, listed from a subshell so that neither a glob's
# directory fd nor this command substitution's own pipe shows up as ours.
otherfds=$(
    sub=$BASHPID; me=$(readlink "/proc/$sub/fd/1")
    sep=""
    for f in "/proc/$$/fd/"*; do
        n=${f##*/}; case $n in 0|1|2|255) continue ;; esac
        t=$(readlink "$f" 2>/dev/null) || continue
        [ "$t" = "$me" ] && continue
        case $t in */logwrap.sh) continue ;; esac
        printf '%s"%s=%s"' "$sep" "$n" "$(js "$t")"; sep=,
    done
)

line_head() {  # $1 = mode, rest = argv
    local mode=$1; shift
    printf '{"t0":%s,"pid":%d,"ppid":%d,"caller":"%s","caller_args":"%s","mode":"%s","argv":%s,"verb":"%s","globals":%s,"id":"%s","bundle":"%s","process":"%s","cwd":"%s","stdin":"%s","stdout":"%s","stderr":"%s","fds":[%s],"env":{%s},"envkeys":"%s","saved":"%s"' \
        "$t0" "$$" "$PPID" "$(js "$caller")" "$(js "${caller_args% }")" "$mode" "$(jarr "$@")" "$(js "$verb")" \
        "$(jarr "${globals[@]}")" "$(js "$cid")" "$(js "$bundle")" "$(js "$procfile")" \
        "$(js "$PWD")" "$fd0" "$fd1" "$fd2" "$otherfds" "$envj" \
        "$(js "${envkeys% }")" "$(js "$saved")"
}


case $verb in
    state|ps|list|kill|delete|start|pause|resume|update|features|checkpoint|spec|"")
        out=$(mktemp "${TMPDIR:-/tmp}/logwrap.XXXXXX") err=$(mktemp "${TMPDIR:-/tmp}/logwrap.XXXXXX")
        # stdin is passed through (update -r - reads resources from stdin).
        "$REAL" "$@" >"$out" 2>"$err"
        rc=$?
        t1=$(date +%s.%N)
        o=$(head -c 4096 "$out"); e=$(head -c 4096 "$err")
        { line_head child "$@"
          printf ',"t1":%s,"rc":%d,"out":"%s","err":"%s"}\n' "$t1" "$rc" "$(js "$o")" "$(js "$e")"; } >> "$LOG" 2>/dev/null
        cat "$out"; cat "$err" >&2
        rm -f "$out" "$err"
        exit $rc ;;
    *)
        { line_head exec "$@"; printf '}\n'; } >> "$LOG" 2>/dev/null
        exec "$REAL" "$@" ;;
esac
