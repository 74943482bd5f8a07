// Field names on the wire: REST speaks snake_case, the domain camelCase. Both come from the
// domain's zod input schemas (the keys of their objects), so an option added to a schema is on
// the wire at once, and its validation messages speak the wire's names: nothing here lists
// option names.
import type { z } from 'zod';
import { DomainError } from '../../domain/errors.ts';
import { isJsonObject } from '../http.ts';

/** `failOnNoData` → `fail_on_no_data`. */
export const wireName = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Other names Datadog's clients and documentation use for a field, taken as well. */
const ALIASES: Record<string, string> = { included_resources: 'allowedResources', apm_primary_tag: 'primaryTag' };

/** What this module reads of a zod schema's definition (zod 4's `_zod.def`). */
interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  catchall?: z.ZodType;
  innerType?: z.ZodType;
  in?: z.ZodType;
  out?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
}

const defOf = (schema: z.ZodType): Def => (schema as unknown as { _zod: { def: Def } })._zod.def;

/** The definitions a value passes through: `schema` and what its wrappers (optional, default, preprocess…) hold. */
function layers(schema: z.ZodType): Def[] {
  const def = defOf(schema);
  if (def.type === 'pipe') return [def, ...layers(def.in!), ...layers(def.out!)];
  return def.innerType ? [def, ...layers(def.innerType)] : [def];
}

const objectOf = (schema: z.ZodType) => layers(schema).find((d) => d.type === 'object');
const elementOf = (schema: z.ZodType) => layers(schema).find((d) => d.type === 'array')?.element;

/** The schema of one field of an object schema (through its wrappers). */
export function fieldSchema(schema: z.ZodType, name: string): z.ZodType | undefined {
  return objectOf(schema)?.shape?.[name];
}

/**
 * A wire value read into the domain's names for `schema`: each object's snake_case keys (or a
 * Datadog alias) become the schema's keys, through nested objects and arrays. `where` is the
 * value's path in the request body, for messages. A key the schema does not know (a camelCase
 * name included) is refused when the schema is strict, dropped otherwise (as the schema itself
 * would); values are left for the schema to judge.
 */
export function decode(schema: z.ZodType, value: unknown, where: string): unknown {
  const element = elementOf(schema);
  if (element && Array.isArray(value)) return value.map((v, i) => decode(element, v, `${where}[${i}]`));
  const object = objectOf(schema);
  if (!object || !isJsonObject(value)) return value;
  const strict = object.catchall !== undefined && defOf(object.catchall).type === 'never';
  return decodeObject(object, value, where, strict ? 'refuse' : 'drop');
}

/**
 * The `fields` (domain names) of a request body's `attributes` for `schema`, read as
 * {@link decode} does; other attributes are not this endpoint's and are ignored.
 */
export function decodeFields(schema: z.ZodType, attributes: Record<string, unknown>, fields: readonly string[], where: string): Record<string, unknown> {
  const object = objectOf(schema);
  if (!object?.shape) throw new Error(`decodeFields: ${where} has no object schema`);
  const shape = object.shape;
  const picked = fields.map((f) => {
    if (!shape[f]) throw new Error(`decodeFields: the schema of ${where} has no field ${f}`);
    return [f, shape[f]] as const;
  });
  return decodeObject({ ...object, shape: Object.fromEntries(picked) }, attributes, where, 'drop');
}

function decodeObject(object: Def, value: Record<string, unknown>, where: string, unknown: 'refuse' | 'drop'): Record<string, unknown> {
  const shape = object.shape ?? {};
  const byWire = new Map(Object.keys(shape).map((name) => [wireName(name), name]));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    const alias = ALIASES[key];
    const name = byWire.get(key) ?? (alias !== undefined && alias in shape ? alias : undefined);
    if (name === undefined) {
      if (unknown === 'refuse') throw new DomainError('BAD_USER_INPUT', `${where}: unknown option "${key}"`, `${where}.${key}`);
      continue;
    }
    // The field's own wire name wins over an alias given beside it.
    if (name !== byWire.get(key) && value[wireName(name)] != null) continue;
    out[name] = decode(shape[name]!, v, `${where}.${key}`);
  }
  return out;
}

/** A domain value written in the wire's names for `schema` (nested objects and arrays too); unset fields left out. */
export function encode(schema: z.ZodType | undefined, value: unknown): unknown {
  if (schema === undefined) return value;
  const element = elementOf(schema);
  if (element && Array.isArray(value)) return value.map((v) => encode(element, v));
  const shape = objectOf(schema)?.shape;
  if (!shape || !isJsonObject(value)) return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => (k in shape ? [wireName(k), encode(shape[k], v)] : [k, v])),
  );
}

/** Every object key anywhere inside `schema`: the names the domain's messages may use. */
function namesIn(schema: z.ZodType, into: Set<string>): Set<string> {
  for (const def of layers(schema)) {
    for (const [name, field] of Object.entries(def.shape ?? {})) {
      into.add(name);
      namesIn(field, into);
    }
    if (def.element) namesIn(def.element, into);
    for (const option of def.options ?? []) namesIn(option, into);
  }
  return into;
}

/**
 * Turns the domain's field names in a message into the wire's, for the fields of `schemas`;
 * quoted text (the user's own) is left alone.
 */
export function wireWords(...schemas: z.ZodType[]): (text: string) => string {
  const names = new Set<string>();
  for (const schema of schemas) namesIn(schema, names);
  return (text) =>
    text
      .split(/("[^"]*")/)
      .map((part, i) => (i % 2 === 1 ? part : part.replace(/\b[a-z]+(?:[A-Z][a-z0-9]*)+\b/g, (w) => (names.has(w) ? wireName(w) : w))))
      .join('');
}
