/**
 * The monitor search language of Datadog's deployment gates, as a real parser.
 *
 *   query   := or
 *   or      := and ( "OR" and )*
 *   and     := not ( ["AND"] not )*          -- juxtaposition is AND
 *   not     := ( "NOT" | "-" ) not | primary
 *   primary := "(" or ")" | key ":" values | text
 *   values  := value | "(" value ( ("OR" | "AND")? value )* ")"
 *   value   := quoted string | bare word, "*" wildcards allowed
 *
 * Keys: `tag` ("k:v" against static tags), `scope` ("k:v" inside the monitor's query),
 * `group` ("k:v" against a group's tags; restricts evaluation to matching groups), `id`,
 * `type`, `priority`, `muted`, `status`, `name`; any other key is a static tag `key:value`.
 * Free text matches the monitor name. Matching is case-insensitive.
 */

/** Longest query accepted anywhere (searches, rules, subscriptions). */
export const MAX_QUERY_LENGTH = 1000;
/** Longest value or pattern: no monitor name or tag is longer, so a longer one matches nothing. */
export const MAX_PATTERN_LENGTH = 300;
/** Characters examined by matching so far: a cost meter (tests, search budgets). */
export const matchWork = { steps: 0 };

export type Expr =
  | { kind: 'and'; items: Expr[] }
  | { kind: 'or'; items: Expr[] }
  | { kind: 'not'; item: Expr }
  | { kind: 'term'; key: string; values: string[]; any: boolean }
  | { kind: 'text'; value: string };

export class MonitorQueryError extends Error {
  constructor(
    message: string,
    /** 1-based column of the problem. */
    readonly column: number,
  ) {
    super(`${message} at column ${column}`);
    this.name = 'MonitorQueryError';
  }
}

type Token = { t: 'lparen' | 'rparen' | 'minus' | 'colon'; pos: number } | { t: 'word'; value: string; quoted: boolean; pos: number };

const SPECIAL = new Set(['(', ')', ':', '"']);

function tokenize(input: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < input.length) {
    const c = input[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '(') {
      tokens.push({ t: 'lparen', pos: i });
      i++;
    } else if (c === ')') {
      tokens.push({ t: 'rparen', pos: i });
      i++;
    } else if (c === ':') {
      tokens.push({ t: 'colon', pos: i });
      i++;
    } else if (c === '"') {
      const start = i;
      let value = '';
      i++;
      for (;;) {
        if (i >= input.length) throw new MonitorQueryError('unterminated quoted value', start + 1);
        const d = input[i]!;
        if (d === '\\' && i + 1 < input.length) {
          value += input[i + 1];
          i += 2;
        } else if (d === '"') {
          i++;
          break;
        } else {
          value += d;
          i++;
        }
      }
      tokens.push({ t: 'word', value, quoted: true, pos: start });
    } else if (c === '-' && (tokens.length === 0 || isBoundary(input, i))) {
      tokens.push({ t: 'minus', pos: i });
      i++;
    } else {
      const start = i;
      while (i < input.length && !/\s/.test(input[i]!) && !SPECIAL.has(input[i]!)) i++;
      tokens.push({ t: 'word', value: input.slice(start, i), quoted: false, pos: start });
    }
  }
  return tokens;
}

/** A leading `-` negates only at the start of a term, not inside `a-b`. */
function isBoundary(input: string, i: number): boolean {
  const prev = input[i - 1];
  return prev === undefined || /\s/.test(prev) || prev === '(';
}

const KEYWORDS = new Set(['AND', 'OR', 'NOT']);

class Parser {
  private i = 0;
  constructor(
    private readonly tokens: Token[],
    private readonly length: number,
  ) {}

  private peek(): Token | undefined {
    return this.tokens[this.i];
  }
  private col(t: Token | undefined): number {
    return (t ? t.pos : this.length) + 1;
  }
  private isKeyword(t: Token | undefined, kw: string): boolean {
    return t?.t === 'word' && !t.quoted && t.value === kw;
  }

  parse(): Expr {
    if (this.tokens.length === 0) throw new MonitorQueryError('empty query', 1);
    const expr = this.or();
    const rest = this.peek();
    if (rest) throw new MonitorQueryError(rest.t === 'rparen' ? "unmatched ')'" : 'unexpected input', this.col(rest));
    return expr;
  }

  private or(): Expr {
    const items = [this.and()];
    while (this.isKeyword(this.peek(), 'OR')) {
      this.i++;
      if (!this.startsOperand(this.peek())) throw new MonitorQueryError("expected a term after 'OR'", this.col(this.peek()));
      items.push(this.and());
    }
    return items.length === 1 ? items[0]! : { kind: 'or', items };
  }

  private and(): Expr {
    const items = [this.not()];
    for (;;) {
      const t = this.peek();
      if (this.isKeyword(t, 'AND')) {
        this.i++;
        if (!this.startsOperand(this.peek())) throw new MonitorQueryError("expected a term after 'AND'", this.col(this.peek()));
        items.push(this.not());
      } else if (this.startsOperand(t)) {
        items.push(this.not());
      } else {
        break;
      }
    }
    return items.length === 1 ? items[0]! : { kind: 'and', items };
  }

  private startsOperand(t: Token | undefined): boolean {
    if (!t) return false;
    if (t.t === 'lparen' || t.t === 'minus') return true;
    return t.t === 'word' && !(!t.quoted && (t.value === 'AND' || t.value === 'OR'));
  }

  private not(): Expr {
    const t = this.peek();
    if (t && (t.t === 'minus' || this.isKeyword(t, 'NOT'))) {
      this.i++;
      if (!this.startsOperand(this.peek())) {
        throw new MonitorQueryError(`expected a term after '${t.t === 'minus' ? '-' : 'NOT'}'`, this.col(this.peek()));
      }
      return { kind: 'not', item: this.not() };
    }
    return this.primary();
  }

  private primary(): Expr {
    const t = this.peek();
    if (!t) throw new MonitorQueryError('expected a term', this.col(t));
    if (t.t === 'lparen') {
      this.i++;
      if (this.peek()?.t === 'rparen') throw new MonitorQueryError('empty parentheses', this.col(this.peek()));
      const inner = this.or();
      const close = this.peek();
      if (close?.t !== 'rparen') throw new MonitorQueryError("missing ')' for '(' opened", t.pos + 1);
      this.i++;
      return inner;
    }
    if (t.t === 'rparen') throw new MonitorQueryError("unexpected ')'", this.col(t));
    if (t.t === 'colon') throw new MonitorQueryError("':' without a key before it", this.col(t));
    if (t.t !== 'word') throw new MonitorQueryError('expected a term', this.col(t));
    this.i++;
    if (this.peek()?.t === 'colon' && !t.quoted) {
      const colon = this.tokens[this.i++]!;
      const key = t.value.toLowerCase();
      if (key === '') throw new MonitorQueryError('empty key', this.col(t));
      return this.values(key, colon);
    }
    if (!t.quoted && KEYWORDS.has(t.value)) throw new MonitorQueryError(`'${t.value}' needs a term on each side`, this.col(t));
    return { kind: 'text', value: t.value };
  }

  private values(key: string, colon: Token): Expr {
    const t = this.peek();
    if (t?.t === 'word') {
      this.i++;
      return { kind: 'term', key, values: [t.value], any: true };
    }
    if (t?.t === 'lparen') {
      this.i++;
      const values: string[] = [];
      let any = true;
      for (;;) {
        const v = this.peek();
        if (v?.t === 'rparen') break;
        if (v?.t !== 'word') throw new MonitorQueryError(`expected a value in ${key}:( … )`, this.col(v));
        if (!v.quoted && (v.value === 'OR' || v.value === 'AND')) {
          if (values.length === 0) throw new MonitorQueryError(`'${v.value}' needs a value on each side`, this.col(v));
          if (v.value === 'AND') any = false;
          this.i++;
          continue;
        }
        values.push(v.value);
        this.i++;
      }
      if (values.length === 0) throw new MonitorQueryError(`empty value list for '${key}'`, this.col(t));
      this.i++; // ')'
      return { kind: 'term', key, values, any };
    }
    throw new MonitorQueryError(`missing value after '${key}:'`, colon.pos + 2);
  }
}

export function parseMonitorQuery(query: string): Expr {
  // Checked before anything else reads it: a long query costs every monitor it is matched against.
  if (query.length > MAX_QUERY_LENGTH) {
    throw new MonitorQueryError(`query is at most ${MAX_QUERY_LENGTH} characters (this one has ${query.length})`, MAX_QUERY_LENGTH + 1);
  }
  const tokens = tokenize(query);
  for (const t of tokens) {
    if (t.t === 'word' && t.value.length > MAX_PATTERN_LENGTH) {
      throw new MonitorQueryError(`a key, value or pattern is at most ${MAX_PATTERN_LENGTH} characters (no monitor name or tag is longer)`, t.pos + 1);
    }
  }
  return new Parser(tokens, query.length).parse();
}

// ---------------------------------------------------------------------------------------

/** What a query is matched against: a monitor, and optionally one of its groups. */
export interface MatchableMonitor {
  id: string;
  name: string;
  type: string;
  tags: readonly string[];
  /** The monitor's own query (PromQL, APM filter): `scope:` looks for k:v inside it. */
  query: string;
  muted: boolean;
  priority: number | null;
  /** Worst state of its groups: ok, warn, alert, no_data. */
  status: string;
}

/** A wildcard pattern, lowercased and cut at its stars, with what searching each piece needs. */
interface CompiledPattern {
  /** The pattern without stars (then matching is equality), else null. */
  exact: string | null;
  /** Text before the first star and after the last: anchored at the start and the end. */
  head: string;
  tail: string;
  /** The non-empty pieces between stars, each with its KMP failure table. */
  middle: Array<{ text: string; fail: Int32Array }>;
}

function failureTable(p: string): Int32Array {
  const fail = new Int32Array(p.length);
  let k = 0;
  for (let i = 1; i < p.length; i++) {
    while (k > 0 && p.charCodeAt(i) !== p.charCodeAt(k)) k = fail[k - 1]!;
    if (p.charCodeAt(i) === p.charCodeAt(k)) k++;
    fail[i] = k;
  }
  return fail;
}

function compilePattern(pattern: string): CompiledPattern {
  const pat = pattern.toLowerCase();
  if (!pat.includes('*')) return { exact: pat, head: '', tail: '', middle: [] };
  const parts = pat.split('*');
  return {
    exact: null,
    head: parts[0]!,
    tail: parts.at(-1)!,
    middle: parts
      .slice(1, -1)
      .filter((p) => p !== '')
      .map((text) => ({ text, fail: failureTable(text) })),
  };
}

/** Compiled patterns by source: queries are matched against many monitors, compiled once. */
const compiled = new Map<string, CompiledPattern>();
function compiledPattern(pattern: string): CompiledPattern {
  let c = compiled.get(pattern);
  if (!c) {
    if (compiled.size >= 1000) compiled.clear();
    c = compilePattern(pattern);
    matchWork.steps += pattern.length;
    compiled.set(pattern, c);
  }
  return c;
}

/** First index ≥ from where `p` lies wholly before `end` in `t` (KMP), or -1. */
function indexWithin(t: string, from: number, end: number, p: string, fail: Int32Array): number {
  let k = 0;
  let steps = 0;
  for (let i = from; i < end; i++) {
    const c = t.charCodeAt(i);
    while (k > 0 && c !== p.charCodeAt(k)) {
      k = fail[k - 1]!;
      steps++;
    }
    steps++;
    if (c === p.charCodeAt(k) && ++k === p.length) {
      matchWork.steps += steps;
      return i - p.length + 1;
    }
  }
  matchWork.steps += steps;
  return -1;
}

/**
 * Case-insensitive match with `*` for any run of characters, in time linear in the text and
 * the pattern: the pieces between stars are found leftmost-first (KMP, no backtracking), which
 * is exact for patterns whose only wildcard is `*`. A regex or a backtracking matcher costs
 * pattern × text, which long names and patterns turned into seconds.
 */
export function like(value: string, pattern: string): boolean {
  const p = compiledPattern(pattern);
  const text = value.toLowerCase();
  matchWork.steps += 1 + text.length;
  if (p.exact !== null) return text === p.exact;
  if (text.length < p.head.length + p.tail.length || !text.startsWith(p.head) || !text.endsWith(p.tail)) return false;
  let at = p.head.length;
  const end = text.length - p.tail.length;
  for (const piece of p.middle) {
    const found = indexWithin(text, at, end, piece.text, piece.fail);
    if (found < 0) return false;
    at = found + piece.text.length;
  }
  return true;
}

/** `k:v` against a tag list; `k` alone matches any value of that key. */
function tagMatches(tags: readonly string[], wanted: string): boolean {
  return tags.some((tag) => like(tag, wanted) || (!wanted.includes(':') && like(tag.split(':')[0]!, wanted)));
}

function scopeMatches(query: string, wanted: string): boolean {
  const i = wanted.indexOf(':');
  if (i < 0) return query.toLowerCase().includes(wanted.toLowerCase());
  const k = wanted.slice(0, i);
  const v = wanted.slice(i + 1);
  // Tag filters inside monitor queries appear as k:v (Datadog) or k="v" (PromQL).
  // The lookbehind starts a key only at the start of a run of key characters: without it each
  // position inside a long run is tried again, and a 4000-character query costs 16 million steps.
  matchWork.steps += query.length;
  const pairs = [...query.matchAll(/(?<![A-Za-z0-9_.\-/])([A-Za-z0-9_.\-/]+)\s*(?::|=~?)\s*"?([^"\s,{}()]+)"?/g)].map((m) => `${m[1]}:${m[2]}`);
  return pairs.some((p) => like(p, `${k}:${v}`));
}

const STATUS_ALIASES: Record<string, string> = { alert: 'alert', warn: 'warn', warning: 'warn', ok: 'ok', 'no data': 'no_data', no_data: 'no_data', nodata: 'no_data' };

function termMatches(m: MatchableMonitor, groupTags: readonly string[] | null, key: string, value: string): boolean {
  switch (key) {
    case 'tag':
      return tagMatches(m.tags, value);
    case 'scope':
      return scopeMatches(m.query, value);
    case 'group':
      return groupTags !== null && tagMatches(groupTags, value);
    case 'id':
      return like(m.id, value);
    case 'type':
      return like(m.type, value);
    case 'name':
    case 'title':
      return like(m.name, value.includes('*') ? value : `*${value}*`);
    case 'muted':
      return m.muted === (value.toLowerCase() === 'true');
    case 'priority':
      return m.priority !== null && String(m.priority) === value.replace(/^p/i, '');
    case 'status':
      return m.status === (STATUS_ALIASES[value.toLowerCase()] ?? value.toLowerCase());
    default:
      return tagMatches(m.tags, `${key}:${value}`);
  }
}

/**
 * Whether a monitor (and, when given, one of its groups) satisfies the query. Group terms
 * are false when no group is given, so `NOT group:…` holds for the monitor as a whole.
 */
export function matches(expr: Expr, m: MatchableMonitor, groupTags: readonly string[] | null = null): boolean {
  switch (expr.kind) {
    case 'and':
      return expr.items.every((e) => matches(e, m, groupTags));
    case 'or':
      return expr.items.some((e) => matches(e, m, groupTags));
    case 'not':
      return !matches(expr.item, m, groupTags);
    case 'text':
      return like(m.name, expr.value.includes('*') ? expr.value : `*${expr.value}*`);
    case 'term': {
      const hit = (v: string) => termMatches(m, groupTags, expr.key, v);
      return expr.any ? expr.values.some(hit) : expr.values.every(hit);
    }
  }
}

/** Whether the query has a term on `key` (`group`: then only matching groups are evaluated). */
export function mentions(expr: Expr, key: string): boolean {
  switch (expr.kind) {
    case 'and':
    case 'or':
      return expr.items.some((e) => mentions(e, key));
    case 'not':
      return mentions(expr.item, key);
    case 'term':
      return expr.key === key;
    case 'text':
      return false;
  }
}

/** Group names are tag lists: "region:us-east-1,host:a" → ["region:us-east-1", "host:a"]. */
export function groupTagsOf(group: string): string[] {
  return group === '*'
    ? []
    : group
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
}

/** A canonical group name: tags trimmed and sorted, "*" for a monitor without groups. */
export function normalizeGroup(group: string | null | undefined): string {
  const tags = groupTagsOf(group ?? '*');
  return tags.length === 0 ? '*' : [...new Set(tags)].sort().join(',');
}
