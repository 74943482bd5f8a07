import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { allRulesFinished, realStatus, reportedStatus, type Status } from '../src/domain/verdict.ts';

type Row = [rules: Array<[Status, boolean]>, real: Status, reportedActive: Status, reportedDryRunGate: Status];

// Every combination the Datadog documentation describes, and the edge cases around them.
// Each rule is [status, dryRun].
// biome-ignore format: a truth table, one case a line
const TABLE: Row[] = [
  [[['pass', false]], 'pass', 'pass', 'pass'],
  [[['fail', false]], 'fail', 'fail', 'pass'],
  [[['in_progress', false]], 'in_progress', 'in_progress', 'in_progress'],
  // A failing dry-run rule is recorded but never counted.
  [[['fail', true], ['pass', false]], 'pass', 'pass', 'pass'],
  [[['fail', true], ['in_progress', false]], 'in_progress', 'in_progress', 'in_progress'],
  // Early fail: one real failure decides even while other rules still run.
  [[['fail', false], ['in_progress', false]], 'fail', 'fail', 'pass'],
  [[['in_progress', false], ['fail', false], ['in_progress', true]], 'fail', 'fail', 'pass'],
  // Pass needs every non-dry-run rule to pass; dry-run rules still running do not hold it up.
  [[['pass', false], ['in_progress', true]], 'pass', 'pass', 'pass'],
  [[['pass', false], ['pass', false]], 'pass', 'pass', 'pass'],
  [[['pass', false], ['in_progress', false]], 'in_progress', 'in_progress', 'in_progress'],
  // Only dry-run rules: nothing can fail the gate.
  [[['fail', true], ['fail', true]], 'pass', 'pass', 'pass'],
  // A canceled rule never passes: the gate stays undecided by it.
  [[['canceled', false], ['pass', false]], 'in_progress', 'in_progress', 'in_progress'],
];

describe('dry-run truth table', () => {
  for (const [rules, real, reportedActive, reportedDryRunGate] of TABLE) {
    const label = rules.map(([s, d]) => `${s}${d ? '(dry)' : ''}`).join(' + ');
    test(label, () => {
      const outcomes = rules.map(([status, dryRun]) => ({ status, dryRun }));
      assert.equal(realStatus(outcomes), real, 'real status');
      assert.equal(reportedStatus(realStatus(outcomes), false), reportedActive, 'reported, active gate');
      assert.equal(reportedStatus(realStatus(outcomes), true), reportedDryRunGate, 'reported, dry-run gate');
    });
  }

  test('canceled is reported as canceled, dry run or not', () => {
    assert.equal(reportedStatus('canceled', true), 'canceled');
    assert.equal(reportedStatus('canceled', false), 'canceled');
  });

  test('the evaluation finishes only when every rule, dry run or not, has finished', () => {
    assert.equal(
      allRulesFinished([
        { status: 'fail', dryRun: false },
        { status: 'in_progress', dryRun: true },
      ]),
      false,
    );
    assert.equal(
      allRulesFinished([
        { status: 'fail', dryRun: false },
        { status: 'pass', dryRun: true },
      ]),
      true,
    );
  });
});
