import type { RuleType } from '../db/schema.ts';
import type { Deps } from './deps.ts';
import type { TypedRuleOptions } from './ruleOptions.ts';
import { publicWebhookOptions, storedWebhookOptions } from './webhooks.ts';

/**
 * A rule's options as stored, from options as parsed: what the zod schema cannot know (this
 * server's configuration) is checked here, and secrets are sealed. `field` names the options
 * in errors (`input.options`); `previous` is the stored rule an update replaces.
 */
export function storedRuleOptions(
  deps: Deps,
  typed: TypedRuleOptions,
  field: string,
  previous?: { type: RuleType; options: Record<string, unknown> } | null,
): Record<string, unknown> {
  switch (typed.type) {
    case 'webhook':
      return storedWebhookOptions(deps, typed.options, `${field}.webhook`, previous?.type === 'webhook' ? previous.options : null);
    default:
      return typed.options as Record<string, unknown>;
  }
}

/** Stored options as any reader may see them: secrets left out. */
export function publicRuleOptions(rule: { type: RuleType; options: Record<string, unknown> }): Record<string, unknown> {
  return rule.type === 'webhook' ? publicWebhookOptions(rule.options) : rule.options;
}
