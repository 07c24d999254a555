#!/usr/bin/env bash
# Smoke check after `backbone up`: publish the example firm's master data and time, read it back, and
# run the billing topology over it until the invoice candidates are on billing.invoice-candidates.v1.
# Every step prints what it does; the script exits non-zero at the first step that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
BB=.venv/bin/backbone

echo "smoke: starting the billing topology (backbone run topology, log in .backbone/smoke-topology.log)"
mkdir -p .backbone
BACKBONE_LOG_LEVEL=WARNING $BB run topology --app-id backbone-smoke > .backbone/smoke-topology.log 2>&1 &
topology=$!
trap 'kill $topology 2>/dev/null; wait $topology 2>/dev/null' EXIT

echo "smoke: publishing examples/firm (clients, projects, workers, contracts, time entries, approvals)"
for pair in clients:client projects:project workers:worker contracts:contract time-entries:time-entry approvals:approval; do
  file=examples/firm/${pair%%:*}.jsonl
  $BB emit "${pair##*:}" "$file" --quiet
done

echo "smoke: reading the time entries back from psa.time-entries.v1"
count=$($BB tail time-entry --from-beginning --idle-timeout 3 | wc -l)
if [ "$count" -lt 6 ]; then
  echo "smoke: FAILED: expected at least 6 time entries on the topic, read $count" >&2
  exit 1
fi
$BB tail approval --from-beginning --idle-timeout 3 --max 6 --format table
echo "smoke: invoice candidates the topology priced (TE-1002's second revision is an ADJUSTMENT):"
candidates=$($BB tail invoice-candidates --from-beginning --idle-timeout 30 --max 4 | wc -l)
$BB tail invoice-candidates --from-beginning --idle-timeout 3 --max 4 --format table
if [ "$candidates" -lt 4 ]; then
  echo "smoke: FAILED: expected 4 invoice candidates, read $candidates; see .backbone/smoke-topology.log" >&2
  exit 1
fi
echo "smoke: OK ($count time-entry events on the topic; re-running publishes duplicates with the same event ids)"
