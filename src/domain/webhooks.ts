// What a webhook rule may call and how its secrets are kept. Hosts: only those on
// TOLLGATE_WEBHOOK_ALLOWED_HOSTS, checked when the rule is stored and again before every call
// (the list may have shrunk since). Header values: sealed with TOLLGATE_SECRET_KEY when stored,
// opened only to send them, and never part of anything a reader is shown.
import type { AllowedHost } from '../config.ts';
import type { Deps } from './deps.ts';
import { badInput } from './errors.ts';
import type { WebhookRuleOptions } from './ruleOptions.ts';
import { openSecret, SecretUnavailableError, sealSecret } from './secrets.ts';

export interface StoredWebhookHeader {
  name: string;
  /** Sealed (see secrets.ts); opened only to send it. */
  secret: string;
}

/** A webhook rule's options as stored and evaluated: header values sealed. */
export type StoredWebhookOptions = Omit<WebhookRuleOptions, 'headers'> & { headers: StoredWebhookHeader[] };

/** What a reader is shown of a webhook rule's options: header names, never their values. */
export type PublicWebhookOptions = Omit<WebhookRuleOptions, 'headers'> & { headers: Array<{ name: string }> };

const DEFAULT_PORTS: Record<string, number> = { 'http:': 80, 'https:': 443 };

/** The allow-list entry that admits the URL's host and port, or null. */
export function allowedEntryFor(allowed: readonly AllowedHost[], url: URL): AllowedHost | null {
  const host = url.hostname.replace(/\.$/, '');
  const port = url.port === '' ? DEFAULT_PORTS[url.protocol] : Number(url.port);
  return allowed.find((a) => (a.wildcard ? host.endsWith(`.${a.host}`) : host === a.host) && (a.port === null || a.port === port)) ?? null;
}

/** Why Tollgate may not call this URL, or null when it may. Names no other allowed host. */
export function hostRefusal(allowed: readonly AllowedHost[], url: string): string | null {
  const parsed = new URL(url);
  if (allowed.length === 0) return 'webhooks are turned off on this Tollgate: no host is on TOLLGATE_WEBHOOK_ALLOWED_HOSTS';
  if (allowedEntryFor(allowed, parsed)) return null;
  return `host ${parsed.host} is not on TOLLGATE_WEBHOOK_ALLOWED_HOSTS: ask the operator to allow it`;
}

/**
 * Addresses the allow-list names as themselves (or by the name localhost): reachable whatever
 * their range. Webhook rules and notification channels both send through this.
 */
export function listedAddresses(allowed: readonly AllowedHost[]): string[] {
  const out: string[] = [];
  for (const a of allowed) {
    if (a.wildcard) continue;
    if (a.host === 'localhost') out.push('127.0.0.1', '::1');
    else if (/^[\d.]+$/.test(a.host) || a.host.startsWith('[')) out.push(a.host.replace(/^\[|\]$/g, ''));
  }
  return out;
}

/** A secret opens only for the header it was sealed for, sent to the origin it was sealed for. */
const secretContext = (name: string, url: string) => `webhook-header\u0000${name.toLowerCase()}\u0000${new URL(url).origin}`;

/**
 * The options to store: the host checked against the allow-list, each header value sealed.
 * A header given without a value keeps the stored one (`previous`), so a rule can be edited
 * without its secrets, but only toward the same origin: a secret is never carried to
 * another host unless given again. `field` names the options in errors.
 */
export function storedWebhookOptions(deps: Deps, input: WebhookRuleOptions, field: string, previous?: Record<string, unknown> | null): StoredWebhookOptions {
  const refusal = hostRefusal(deps.config.webhookAllowedHosts, input.url);
  if (refusal) throw badInput(`${field}.url`, refusal);
  const before = previous as StoredWebhookOptions | null | undefined;
  const sameOrigin = before?.url !== undefined && new URL(before.url).origin === new URL(input.url).origin;
  const headers = input.headers.map((h, i): StoredWebhookHeader => {
    const where = `${field}.headers[${i}].value`;
    if (h.value !== undefined) {
      const key = deps.config.secretKey;
      if (!key)
        throw badInput(where, 'header values are secrets stored encrypted, and TOLLGATE_SECRET_KEY is not set on this Tollgate: ask the operator to set it, or send no headers');
      return { name: h.name, secret: sealSecret(key, h.value, secretContext(h.name, input.url)) };
    }
    const kept = before?.headers?.find((p) => p.name.toLowerCase() === h.name.toLowerCase());
    if (!kept) throw badInput(where, `is required for the new header ${h.name} (values are write-only: omit one only to keep the stored value)`);
    if (!sameOrigin) throw badInput(where, `give the value of ${h.name} again: the url now points to another origin, and a stored secret is never sent to another host`);
    return { name: h.name, secret: kept.secret };
  });
  return { ...input, headers };
}

/** The header values to send, opened. Throws SecretUnavailableError naming the header. */
export function webhookHeaderValues(deps: Deps, o: StoredWebhookOptions): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of o.headers ?? []) {
    try {
      out[h.name] = openSecret(deps.config.secretKey, h.secret, secretContext(h.name, o.url));
    } catch (err) {
      if (!(err instanceof SecretUnavailableError)) throw err;
      throw new SecretUnavailableError(`the value of header ${h.name} cannot be opened: ${err.message}`);
    }
  }
  return out;
}

/** The options as readers see them: header names only. */
export function publicWebhookOptions(o: Record<string, unknown>): PublicWebhookOptions {
  const stored = o as StoredWebhookOptions;
  return { ...stored, headers: (stored.headers ?? []).map((h) => ({ name: h.name })) };
}

export { SecretUnavailableError };
