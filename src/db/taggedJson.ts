// JSON for values JSON alone loses: the events between instances (src/server/redisEvents.ts)
// and the evaluation revision log (src/db/evaluationRevisions.ts) hold rows with Dates, and both must give
// back exactly what was published.

/**
 * JSON with tagged values for what JSON alone loses: rows hold Dates, and a Buffer or typed
 * array would come back as a plain object. A plain object that itself has the tag key is
 * tagged too (as its entries), so no payload can be mistaken for a tagged value.
 */
const TAG = '$tg';

function replacer(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const original = this[key]; // before toJSON: a Date has already become a string in `value`
  if (original instanceof Date) return { [TAG]: 'Date', v: Number.isNaN(original.getTime()) ? null : original.toISOString() };
  if (Buffer.isBuffer(original)) return { [TAG]: 'Buffer', v: original.toString('base64') };
  if (original instanceof Uint8Array) return { [TAG]: 'Uint8Array', v: Buffer.from(original.buffer, original.byteOffset, original.byteLength).toString('base64') };
  if (typeof original === 'bigint') return { [TAG]: 'BigInt', v: original.toString() };
  if (typeof original === 'number' && !Number.isFinite(original)) return { [TAG]: 'Number', v: String(original) };
  if (original !== null && typeof original === 'object' && !Array.isArray(original) && Object.hasOwn(original, TAG)) {
    return { [TAG]: 'Object', v: Object.entries(original) };
  }
  return value;
}

function reviver(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, TAG)) return value;
  const { [TAG]: tag, v } = value as { [TAG]: string; v: unknown };
  switch (tag) {
    case 'Date':
      return new Date(v === null ? Number.NaN : (v as string));
    case 'Buffer':
      return Buffer.from(v as string, 'base64');
    case 'Uint8Array':
      return new Uint8Array(Buffer.from(v as string, 'base64'));
    case 'BigInt':
      return BigInt(v as string);
    case 'Number':
      return Number(v);
    case 'Object':
      return Object.fromEntries(v as [string, unknown][]);
    default:
      return value;
  }
}

/** As text: an event's payload for another process. */
export const serialize = (value: unknown): string => JSON.stringify(value, replacer);

export const deserialize = (text: string): unknown => JSON.parse(text, reviver);

/** As a JSON value (what a json/jsonb column stores): undefined object fields are left out, as JSON does. */
export const toTaggedJson = (value: unknown): unknown => JSON.parse(serialize(value));

/** What toTaggedJson was given, from the JSON value a column gives back. */
export const fromTaggedJson = (json: unknown): unknown => deserialize(JSON.stringify(json));
