import type { RuleType } from '../db/schema.ts';
import { fddRunner } from './fddRule.ts';
import { monitorRunner } from './monitorRule.ts';
import type { RuleRunner } from './runner.ts';

/** One runner per rule type; a type without one cannot be evaluated yet. */
const runners: Partial<Record<RuleType, RuleRunner>> = {
  monitor: monitorRunner,
  faulty_deployment_detection: fddRunner,
};

export const runnerFor = (type: RuleType): RuleRunner | undefined => runners[type];
