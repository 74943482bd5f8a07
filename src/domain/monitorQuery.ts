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

type Token =
  | { t: 'lparen' | 'rparen' | 'minus' | 'colon'; pos: number }
  | { t: 'word'; value: string; quoted: boolean; pos: number };

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
  return new Parser(tokenize(query), query.length).parse();
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

/**
 * Case-insensitive match with `*` for any run of characters. Linear backtracking to the last
 * star only, so no pattern, however many stars, can make matching slow (a regex would).
 */
export function like(value: string, pattern: string): boolean {
  const text = value.toLowerCase();
  const pat = pattern.toLowerCase();
  if (!pat.includes('*')) return text === pat;
  let t = 0;
  let p = 0;
  let star = -1;
  let mark = 0;
  while (t < text.length) {
    if (p < pat.length && pat[p] !== '*' && pat[p] === text[t]) {
      t++;
      p++;
    } else if (p < pat.length && pat[p] === '*') {
      star = p++;
      mark = t;
    } else if (star >= 0) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (pat[p] === '*') p++;
  return p === pat.length;
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
  const pairs = [...query.matchAll(/([A-Za-z0-9_.\-/]+)\s*(?::|=~?)\s*"?([^"\s,{}()]+)"?/g)].map((m) => `${m[1]}:${m[2]}`);
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
  return group === '*' ? [] : group.split(',').map((s) => s.trim()).filter(Boolean);
}

/** A canonical group name: tags trimmed and sorted, "*" for a monitor without groups. */
export function normalizeGroup(group: string | null | undefined): string {
  const tags = groupTagsOf(group ?? '*');
  return tags.length === 0 ? '*' : [...new Set(tags)].sort().join(',');
}
