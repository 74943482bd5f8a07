// One call of a webhook rule: a POST with a JSON body, answered or not within a timeout.
// Redirects are never followed (a 3xx is an answer like any other: it fails the rule), and a
// name is connected to only at addresses it may lead to: not this machine's loopback, not the
// link-local range (169.254.169.254 is the cloud's metadata service), not "any address",
// unless the allow-list names that address itself. So a name on the allow-list (or under one
// of its wildcards) that someone points at an internal address does not reach it.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';

/** Bytes of the answer kept as evidence. */
const ANSWER_BYTES = 1024;

export interface WebhookRequest {
  url: string;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
  /** Addresses (IP literals) the allow-list names: these may be reached whatever their range. */
  listedAddresses: readonly string[];
}

export type WebhookAnswer = { answered: true; status: number; body: string; truncated: boolean; location?: string; ms: number } | { answered: false; error: string; ms: number };

/** The IPv4 address an IPv6 one carries (mapped, compatible or NAT64 64:ff9b::/96), or undefined. */
function embeddedV4(address: string): string | undefined {
  const m = /^(?:::ffff:|::|64:ff9b::)(?:(\d+\.\d+\.\d+\.\d+)|([0-9a-f]{1,4}):([0-9a-f]{1,4}))$/i.exec(address);
  if (!m) return undefined;
  if (m[1]) return m[1];
  const hi = Number.parseInt(m[2]!, 16);
  const lo = Number.parseInt(m[3]!, 16);
  return [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.');
}

/** Ranges a name may not lead to (an address listed as itself may). */
export function forbiddenRange(address: string): string | null {
  const v4 = isIP(address) === 4 ? address : embeddedV4(address);
  if (v4) {
    const [a, b] = v4.split('.').map(Number) as [number, number];
    if (a === 127) return 'loopback';
    if (a === 0) return 'unspecified';
    if (a === 169 && b === 254) return 'link-local';
    if (a >= 224) return 'multicast or reserved';
    return null;
  }
  const v6 = address.toLowerCase();
  if (v6 === '::1') return 'loopback';
  if (v6 === '::') return 'unspecified';
  // The cloud's instance metadata service over IPv6 (EC2 Nitro), like 169.254.169.254.
  if (v6 === 'fd00:ec2::254') return 'link-local';
  if (/^fe[89ab]/.test(v6)) return 'link-local';
  if (v6.startsWith('ff')) return 'multicast';
  return null;
}

/** dns.lookup, refusing a name whose addresses include one it may not lead to. */
function guardedLookup(listed: readonly string[]): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, '', 0);
      for (const { address } of addresses) {
        const range = forbiddenRange(address);
        if (range && !listed.includes(address)) {
          const refusal = Object.assign(new Error(`${hostname} resolves to ${address} (${range}), which a webhook may not reach by name; list that address itself to allow it`), {
            code: 'EADDRNOTALLOWED',
          });
          return callback(refusal, '', 0);
        }
      }
      if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
      const first = addresses[0];
      if (!first) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '', 0);
      callback(null, first.address, first.family);
    });
  };
}

/** POSTs once; never throws for the webhook's failures (they are the answer). */
export function callWebhook(req: WebhookRequest): Promise<WebhookAnswer> {
  const started = performance.now();
  const ms = () => Math.round(performance.now() - started);
  const url = new URL(req.url);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve) => {
    let settled = false;
    const done = (answer: WebhookAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(answer);
    };
    const request = send(url, {
      method: 'POST',
      headers: {
        'user-agent': 'Tollgate-Webhook/1',
        accept: 'application/json, text/plain;q=0.9, */*;q=0.1',
        ...req.headers,
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(req.body)),
      },
      lookup: guardedLookup(req.listedAddresses),
      // One connection per call: a kept-alive socket would outlive the rule's check.
      agent: false,
    });
    // The whole exchange (connecting, sending, the status line and the first KB) within the timeout.
    const timer = setTimeout(() => {
      done({ answered: false, error: `no answer within ${req.timeoutMs} ms`, ms: ms() });
      request.destroy();
    }, req.timeoutMs);
    request.on('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRNOTALLOWED' ? err.message : `${err.code ?? 'error'}: ${err.message}`;
      done({ answered: false, error: why, ms: ms() });
    });
    request.on('response', (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let truncated = false;
      const finish = () => {
        const raw = Buffer.concat(chunks).subarray(0, ANSWER_BYTES);
        const location = res.headers.location;
        done({
          answered: true,
          status: res.statusCode ?? 0,
          // A cut in the middle of a UTF-8 sequence reads as one replacement character.
          body: raw.toString('utf8'),
          truncated,
          ...(location && { location: location.slice(0, 500) }),
          ms: ms(),
        });
        request.destroy();
      };
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        size += chunk.length;
        if (size > ANSWER_BYTES) {
          truncated = true;
          finish();
        }
      });
      res.on('end', finish);
      res.on('error', finish);
    });
    request.end(req.body);
  });
}
