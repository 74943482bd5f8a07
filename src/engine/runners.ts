import type { RuleType } from '../db/schema.ts';
import type { RuleWindow } from '../domain/deps.ts';
import { fddRunner } from './fddRule.ts';
import { freezeRunner } from './freezeRule.ts';
import { metricRunner } from './metricRule.ts';
import { monitorRunner } from './monitorRule.ts';
import type { RuleRunner } from './runner.ts';
import { webhookRunner } from './webhookRule.ts';

/** One runner per rule type; a type without one cannot be evaluated yet. */
const runners: Partial<Record<RuleType, RuleRunner>> = {
  monitor: monitorRunner,
  faulty_deployment_detection: fddRunner,
  metric: metricRunner,
  webhook: webhookRunner,
  freeze: freezeRunner,
};

export const runnerFor = (type: RuleType): RuleRunner | undefined => runners[type];

/** Deps.planWindow: the domain plans a new evaluation's windows with the runners, without importing the engine. */
export const planWindow = (type: RuleType, options: Record<string, unknown>, start: Date): RuleWindow | undefined => runnerFor(type)?.plan(options, start);
