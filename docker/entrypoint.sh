#!/bin/sh
# Container entry point: the environment → one `serve MODEL …` command, run with `exec` so the
# launcher replaces this shell (it gets SIGTERM itself and its exit code is the container's).
#
#   IMAGE [MODEL] [serve options…]        MODEL: the first argument, else $LAUNCHER_MODEL
#   IMAGE launcher gpus --json            any `launcher` subcommand, run as given
#
# Every other setting is read by `serve` from its LAUNCHER_* variables (README, docker/PLATFORM.md);
# this script only prints them, secrets hidden. Works the same outside the image: `serve` is
# whatever the PATH finds.
set -eu

log() {
    printf 'launcher-entrypoint: %s\n' "$*" >&2
}

# Hide the value of any --*key*/--*token*/--*secret*/--*password* flag inside a printed line.
redact() {
    printf '%s\n' "$*" | sed -E 's/(--[a-z0-9-]*(key|token|secret|password)[a-z0-9-]*)([= ]+)[^ ]+/\1\3<hidden>/g'
}

case "${1:-}" in
    launcher | serve)
        exec "$@"
        ;;
    -h | --help)
        exec serve --help
        ;;
esac

# An empty first argument (e.g. an empty `command:` entry) counts as no argument.
if [ "$#" -gt 0 ] && [ -z "$1" ]; then
    shift
fi

model=""
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    model=$1
    shift
elif [ -n "${LAUNCHER_MODEL:-}" ]; then
    model=$LAUNCHER_MODEL
fi
if [ -z "$model" ]; then
    log "no model given: set LAUNCHER_MODEL or pass the model as the first argument"
    log "  a profile alias (launcher models), a Hugging Face repo id or a directory under /models,"
    log "  e.g. -e LAUNCHER_MODEL=Qwen/Qwen3-8B   or   IMAGE Qwen/Qwen3-8B --max-model-len 32768"
    exit 2
fi

if ! command -v serve >/dev/null 2>&1; then
    log "serve is not on PATH ($PATH): install vllm-headroom (pip install /path/to/checkout)"
    exit 127
fi

log "model: $model"
env | LC_ALL=C sort | while IFS= read -r line; do
    case $line in
        LAUNCHER_*=*) ;;
        *) continue ;;
    esac
    name=${line%%=*}
    case $name in
        *TOKEN* | *SECRET* | *PASSWORD* | *KEY*) log "  $name=<hidden>" ;;
        *) log "  $(redact "$line")" ;;
    esac
done
if [ -n "${HF_TOKEN:-}${HUGGING_FACE_HUB_TOKEN:-}" ]; then
    log "  HF_TOKEN=<hidden>"
else
    log "  HF_TOKEN not set (gated Hugging Face models will not download)"
fi
log "exec $(redact serve "$model" "$@")"

exec serve "$model" "$@"
