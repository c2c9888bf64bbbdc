# Sourced by scripts/bench-*: `--json FILE` and `--compare [BASELINE.json]` (benches/bench.py does
# the JSON and the comparison; see benches/README.md).
#   bench_parse_args "$@"   sets bench_json, bench_compare (0/1), bench_baseline and bench_args
#                           (every other argument, in order)
#   bench_out               where the script writes its result (set when --json or --compare)
#   bench_record ARGS...    benches/bench.py record --out "$bench_out" ARGS (no-op without a file)
#   bench_finish            compare when asked; returns compare's exit code (0 ok, 1 regression,
#                           2 unusable input)
bench_py="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench.py"

bench_parse_args() {
  bench_json=""; bench_compare=0; bench_baseline=""; bench_args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --json) [ $# -ge 2 ] || { echo "--json needs a FILE" >&2; exit 2; }; bench_json=$2; shift 2 ;;
      --json=*) bench_json=${1#--json=}; shift ;;
      --compare=*) bench_compare=1; bench_baseline=${1#--compare=}; shift ;;
      --compare)
        bench_compare=1; shift
        # The baseline is optional: the next argument is it only if it names a .json file.
        if [ $# -gt 0 ] && [[ "$1" == *.json ]]; then bench_baseline=$1; shift; fi ;;
      *) bench_args+=("$1"); shift ;;
    esac
  done
  if [ -n "$bench_baseline" ] && [ ! -f "$bench_baseline" ]; then
    echo "--compare $bench_baseline: no such file" >&2; exit 2
  fi
  bench_out=""
  if [ -n "$bench_json" ]; then
    bench_out=$bench_json
  elif [ "$bench_compare" = 1 ]; then
    bench_out=$(mktemp --suffix=.json)
    bench_tmp_out=$bench_out
  fi
}

bench_record() {
  [ -n "$bench_out" ] || return 0
  python3 "$bench_py" record --out "$bench_out" "$@"
}

bench_finish() {
  local rc=0
  if [ "$bench_compare" = 1 ]; then
    python3 "$bench_py" compare "$bench_out" ${bench_baseline:+"$bench_baseline"} || rc=$?
  fi
  [ -n "$bench_json" ] && echo "result: $bench_json" >&2
  [ -n "${bench_tmp_out:-}" ] && rm -f "$bench_tmp_out"
  return $rc
}
