#!/usr/bin/env bash
# Mutation testing of the measure, results and validation code (opt-in: not part of the
# default test run; .github/workflows/mutation.yml runs it weekly). Writes the surviving
# mutants to a report and exits 1 when a module's score is below its floor
# (scripts/mutation.toml; equivalent survivors: scripts/mutation_equivalent.toml).
#
#   bash scripts/mutation.sh                          # every module, report: mutation-report.md
#   bash scripts/mutation.sh --modules measure,compare --report /tmp/m.md
#   bash scripts/mutation.sh --tests-from main        # the score with main's tests (before)
#
# Needs mutmut (pip install -e ".[mutation]"); KPBENCH_MUTATION_PYTHON picks the
# interpreter that has it. Each module runs in a copy of the checkout under
# KPBENCH_MUTATION_WORKDIR (default /tmp/kpbench-mutation): the checkout is never mutated.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${KPBENCH_MUTATION_PYTHON:-python}
if ! "$python" -c "import mutmut" 2>/dev/null; then
    echo "mutation.sh: mutmut is not installed for $python: pip install -e '.[mutation]'" >&2
    exit 2
fi
exec nice -n "${KPBENCH_MUTATION_NICE:-10}" "$python" scripts/mutation.py "$@"
