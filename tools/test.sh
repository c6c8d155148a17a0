#!/usr/bin/env bash
# The project's test command (README "Tests"): every notebook under nbdev_test, then the pytest battery in tests/.
# Prints one closing line "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg PYTHONHASHSEED=0
log=$(mktemp)
n_nbs=$(ls nbs/*.ipynb | grep -v '/_' | wc -l)
timeout 1500 nbdev_test --n_workers 1 --timing 2>&1 | tee "$log"
nb_rc=${PIPESTATUS[0]}
nb_failed=$(python3 - "$log" <<'PY'
import sys, re
t = open(sys.argv[1], errors="replace").read()
m = t.split("nbdev Tests Failed On The Following Notebooks:")
print(len([l for l in m[1].splitlines() if l.strip().endswith(".ipynb")]) if len(m) > 1 else 0)
PY
)
if [ "$nb_rc" -ne 0 ] && [ "$nb_failed" -eq 0 ]; then nb_failed=$n_nbs; fi
nb_passed=$((n_nbs - nb_failed))
py_passed=0; py_failed=0
if ls tests/test_*.py >/dev/null 2>&1; then
  timeout 1200 python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$log"
  py_rc=${PIPESTATUS[0]}
  py_passed=$(grep -Eo '[0-9]+ passed' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
  py_failed=$(grep -Eo '[0-9]+ (failed|error)' "$log" | awk '{s+=$1} END {print s+0}')
  [ "$py_rc" -eq 0 ] || [ "$py_failed" -gt 0 ] || py_failed=1
fi
passed=$((nb_passed + py_passed)); failed=$((nb_failed + py_failed))
echo "notebooks: $nb_passed passed, $nb_failed failed; pytest: $py_passed passed, $py_failed failed"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
