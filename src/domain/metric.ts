// The pure parts of the `metric` rule (docs/rules/metric.md): its bound ("<= 0.02",
// "<= +10%"), the lexical check and the placeholders of its PromQL, and the times it measures
// at. The runner (src/engine/metricRule.ts) measures and judges with these.

export type Comparator = '<=' | '<' | '>=' | '>';

/** `relative`: `value` is a percentage of the baseline (signed); else an absolute threshold. */
export interface Bound {
  op: Comparator;
  value: number;
  relative: boolean;
}

const BOUND = /^\s*(<=|>=|<|>)\s*([+-]?)(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+)\s*(%?)\s*$/;

/** The bound, or a sentence saying what is wrong with it. */
export function parseBound(text: string): Bound | string {
  const m = BOUND.exec(text);
  if (!m) return `bound "${text.slice(0, 50)}" is not a comparison such as "<= 0.02" (absolute) or "<= +10%" (relative to the baseline)`;
  const [, op, sign, digits, percent] = m;
  const value = Number(`${sign}${digits}`);
  if (!Number.isFinite(value)) return 'bound must be a finite number';
  if (percent) {
    // "<= 10%" could mean "at most 10% of the baseline" or "at most 10% above it": say which.
    if (!sign) return `a relative bound says its direction: "${op} +${digits}%" (above the baseline) or "${op} -${digits}%" (below it)`;
    if (value < -100 || value > 10_000) return 'a relative bound is between -100% and +10000%';
  }
  return { op: op as Comparator, value, relative: percent === '%' };
}

/** The one spelling stored and shown: "<= 0.02", "<= +10%", ">= -5%". */
export function formatBound(b: Bound): string {
  return b.relative ? `${b.op} ${b.value >= 0 ? '+' : ''}${b.value}%` : `${b.op} ${b.value}`;
}

export const isRelativeBound = (text: string) => text.trimEnd().endsWith('%');

/**
 * The limit a canary value is held to at one point. Relative: the baseline moved by the
 * percentage of its magnitude (so "+10%" means above it for a negative baseline too), widened
 * by `margin` in the direction the bound allows.
 */
export function limitOf(b: Bound, baseline: number | null, margin = 0): number {
  if (!b.relative) return b.value;
  const moved = baseline! + (Math.abs(baseline!) * b.value) / 100;
  return b.op === '<=' || b.op === '<' ? moved + margin : moved - margin;
}

export function holds(op: Comparator, value: number, limit: number): boolean {
  switch (op) {
    case '<=':
      return value <= limit;
    case '<':
      return value < limit;
    case '>=':
      return value >= limit;
    case '>':
      return value > limit;
  }
}

// ---- PromQL ----

export const MAX_PROMQL_LENGTH = 4000;
const PLACEHOLDERS = ['version', 'service', 'env'] as const;
type Placeholder = (typeof PLACEHOLDERS)[number];

/**
 * What a reader can check without Prometheus: strings closed, brackets balanced, placeholders
 * known and each the whole value of a double-quoted string. Prometheus itself parses the rest
 * at the first check, and a query it refuses fails the rule (never onSourceError).
 * Returns a sentence naming the character at fault, or null.
 */
export function promqlProblem(q: string): string | null {
  const stack: Array<{ char: string; at: number }> = [];
  const closing: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
  // Where a placeholder may be: a double-quoted string that is nothing else (the only place
  // promqlString's escaping keeps the value inside the string), or a comment (inert there).
  const wholeStrings = new Set<number>();
  const comments: Array<[number, number]> = [];
  for (let i = 0; i < q.length; i++) {
    const c = q[i]!;
    if (c === '#') {
      const start = i;
      while (i < q.length && q[i] !== '\n') i++;
      comments.push([start, i]);
    } else if (c === '"' || c === "'" || c === '`') {
      const start = i;
      for (i++; i < q.length && q[i] !== c; i++) {
        if (c !== '`' && q[i] === '\\') i++;
        else if (c !== '`' && q[i] === '\n') break;
      }
      if (q[i] !== c) return `the string opened at character ${start + 1} is not closed`;
      if (c === '"' && /^"\{\{[^{}]*\}\}"$/.test(q.slice(start, i + 1))) wholeStrings.add(start);
    } else if (c === '(' || c === '[' || c === '{') {
      stack.push({ char: c, at: i });
    } else if (c in closing) {
      const open = stack.pop();
      if (!open) return `"${c}" at character ${i + 1} closes nothing`;
      if (open.char !== closing[c]) return `"${c}" at character ${i + 1} does not close the "${open.char}" at character ${open.at + 1}`;
    }
  }
  const open = stack.pop();
  if (open) return `the "${open.char}" at character ${open.at + 1} is never closed`;
  for (const m of q.matchAll(/\{\{([^{}]*)\}\}/g)) {
    const name = m[1]!;
    if (!(PLACEHOLDERS as readonly string[]).includes(name)) return `unknown placeholder "{{${name}}}": a query may use {{version}}, {{service}} and {{env}}`;
    if (comments.some(([from, to]) => m.index > from && m.index < to)) continue;
    if (!wholeStrings.has(m.index - 1)) {
      return `{{${name}}} must be a whole label value in double quotes, e.g. ${name}="{{${name}}}"`;
    }
  }
  return null;
}

export const usesPlaceholder = (q: string | undefined, name: Placeholder) => q?.includes(`"{{${name}}}"`) ?? false;

/** Every `"{{version}}"` and the matcher before it (`label="{{version}}"`), for the derived baseline. */
const VERSION_MATCHER = /([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"\{\{version\}\}"/g;

/**
 * Why the baseline cannot be derived from this query (null when it can): every `{{version}}`
 * must be the value of an equality matcher, `label="{{version}}"`.
 */
export function derivedBaselineProblem(q: string): string | null {
  const total = q.split('"{{version}}"').length - 1;
  if (total === 0) return 'a relative bound compares the canary with the other versions: match the version in the query (version="{{version}}") or give baselineQuery';
  const matchers = [...q.matchAll(VERSION_MATCHER)];
  const other = matchers.find((m) => m[2] !== '=');
  if (other) return `{{version}} is matched with ${other[2]}; the baseline is derived from equality matchers only (${other[1]}="{{version}}"): use = or give baselineQuery`;
  if (matchers.length < total) return 'the baseline is derived from label matchers only (version="{{version}}"), and {{version}} appears elsewhere: give baselineQuery';
  return null;
}

/**
 * The baseline query of a query: each `label="{{version}}"` becomes `label!="{{version}}",label!=""`,
 * every series of another version (and none without the label).
 */
export function deriveBaseline(q: string): string {
  return q.replace(VERSION_MATCHER, (_all, label: string) => `${label}!="{{version}}",${label}!=""`);
}

/** A value inside a PromQL double-quoted string: backslashes, quotes and line ends escaped. */
function promqlString(value: string): string {
  return value.replace(/[\\"\n\r\t]/g, (c) => ({ '\\': '\\\\', '"': '\\"', '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c]!);
}

/** The query with its placeholders filled; a placeholder without a value stays as written. */
export function expandPlaceholders(q: string, values: Partial<Record<Placeholder, string | null>>): string {
  return q.replace(/"\{\{(version|service|env)\}\}"/g, (all, name: Placeholder) => {
    const v = values[name];
    return v === undefined || v === null ? all : `"${promqlString(v)}"`;
  });
}

// ---- when a rule measures ----

/** A window measured more often than this is a time series the evidence cannot show in full. */
export const MAX_METRIC_POINTS = 241;

/** One point at the window's start, one every interval, and one at its end. */
export function pointCount(durationS: number, intervalS: number): number {
  return Math.floor(durationS / intervalS) + 1 + (durationS % intervalS === 0 ? 0 : 1);
}

export function measurementTimes(windowStartsAt: number, windowEndsAt: number, intervalS: number): number[] {
  const times: number[] = [];
  for (let t = windowStartsAt; t < windowEndsAt; t += intervalS * 1000) times.push(t);
  times.push(windowEndsAt);
  return times;
}
