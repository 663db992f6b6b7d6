#!/usr/bin/env bash
# The reliability check of the test suite itself: ROUNDS rounds (default 5) of
# two copies of `go tool task test` at once on this machine. Logs go to
# ${TMPDIR:-/tmp}/linkedge-loaded-ROUND-{a,b}.log; exits non-zero on the first
# round in which either copy failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
rounds=${ROUNDS:-5}
out=${TMPDIR:-/tmp}
for round in $(seq 1 "$rounds"); do
  start=$(date +%s)
  go tool task test >"$out/linkedge-loaded-$round-a.log" 2>&1 & a=$!
  go tool task test >"$out/linkedge-loaded-$round-b.log" 2>&1 & b=$!
  wait $a; ra=$?
  wait $b; rb=$?
  echo "round $round: copy a exit $ra, copy b exit $rb, $(( $(date +%s) - start )) s"
  if [ $ra -ne 0 ] || [ $rb -ne 0 ]; then exit 1; fi
done
