// Charts are SVG drawn here (a stacked bar per day, horizontal bars): no chart library, so the
// first load stays small and the CSP needs no exception (no inline styles or eval).
import { useMemo } from 'preact/hooks';
import { ErrorNote, formatDuration, Page, useQuery } from '../components.tsx';
import { RANGES, timeRange, withParam } from '../filters.ts';
import { navigate, useLocation } from '../router.ts';

interface Day {
  day: string;
  pass: number;
  fail: number;
  canceled: number;
  inProgress: number;
  total: number;
}
interface Insights {
  days: Day[];
  mostFailingGates: Array<{ gateId: string | null; service: string; env: string; identifier: string; failures: number; evaluations: number }>;
  mostFailingRules: Array<{ name: string; type: string; service: string; env: string; identifier: string; failures: number; evaluations: number }>;
  failureReasons: Array<{ pattern: string; sample: string; label: string; count: number; ruleType: string }>;
  failedRulesComplete: boolean;
  failedRulesRead: number;
  timeToVerdict: { decided: number; p50Seconds: number | null; p95Seconds: number | null; maxSeconds: number | null };
}

const INSIGHTS = `query Insights($filter: EvaluationFilter) {
  evaluationInsights(filter: $filter, top: 10) {
    days { day pass fail canceled inProgress total }
    mostFailingGates { gateId service env identifier failures evaluations }
    mostFailingRules { name type service env identifier failures evaluations }
    failureReasons { pattern sample label count ruleType }
    failedRulesComplete failedRulesRead
    timeToVerdict { decided p50Seconds p95Seconds maxSeconds }
  }
}`;

const SERIES = [
  ['pass', 'Pass', 'bar-pass', 'swatch-pass'],
  ['fail', 'Fail', 'bar-fail', 'swatch-fail'],
  ['canceled', 'Canceled', 'bar-canceled', 'swatch-canceled'],
] as const;

function DailyChart({ days }: { days: Day[] }) {
  const all = days.map((d) => d.day);
  const counts = new Map<string, Record<string, number>>(days.map((d) => [d.day, { pass: d.pass, fail: d.fail, canceled: d.canceled }]));
  const totals = all.map((d) => SERIES.reduce((n, [s]) => n + (counts.get(d)?.[s] ?? 0), 0));
  const max = Math.max(1, ...totals);
  const width = 720;
  const height = 220;
  const left = 36;
  const bottom = 24;
  const top = 12;
  const slot = (width - left) / all.length;
  const bar = Math.max(2, Math.min(40, slot * 0.7));
  const y = (v: number) => top + (height - bottom - top) * (1 - v / max);
  const ticks = [0, Math.round(max / 2), max];
  const summary = all.map((d) => `${d}: ${SERIES.map(([s, l]) => `${counts.get(d)?.[s] ?? 0} ${l.toLowerCase()}`).join(', ')}`).filter((_, i) => totals[i]! > 0);
  return (
    <figure class="card" data-testid="chart-by-day">
      <figcaption>
        <h2>Evaluations per day (UTC)</h2>
      </figcaption>
      <ul class="legend" aria-hidden="true">
        {SERIES.map(([, label, , swatch]) => (
          <li key={label}>
            <span class={`swatch ${swatch}`} />
            {label}
          </li>
        ))}
      </ul>
      <svg class="chart" viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`Pass, fail and canceled evaluations per day. ${summary.join('; ') || 'None in this range.'}`}>
        {ticks.map((t) => (
          <g key={t}>
            <line x1={left} x2={width} y1={y(t)} y2={y(t)} stroke="#d0d7de" stroke-width="1" />
            <text x={left - 6} y={y(t) + 4} text-anchor="end">
              {t}
            </text>
          </g>
        ))}
        {all.map((d, i) => {
          let base = 0;
          const x = left + i * slot + (slot - bar) / 2;
          return (
            <g key={d}>
              <title>{`${d}: ${SERIES.map(([s, l]) => `${counts.get(d)?.[s] ?? 0} ${l.toLowerCase()}`).join(', ')}`}</title>
              {SERIES.map(([s, , cls]) => {
                const v = counts.get(d)?.[s] ?? 0;
                if (!v) return null;
                const rect = <rect key={s} class={cls} x={x} width={bar} y={y(base + v)} height={y(base) - y(base + v)} />;
                base += v;
                return rect;
              })}
              {(all.length <= 8 || i % Math.ceil(all.length / 8) === 0) && (
                <text x={x + bar / 2} y={height - 6} text-anchor="middle">
                  {d.slice(5)}
                </text>
              )}
            </g>
          );
        })}
      </svg>
    </figure>
  );
}

/**
 * Horizontal bars. With `of` (failures of evaluations) a bar is the failure rate, so "1 of 3"
 * reads a third as bad as "1 of 1"; without, the count against the largest.
 */
function Bars({ title, rows, testid }: { title: string; rows: Array<{ label: string; value: number; of?: number; href?: string | undefined; title?: string }>; testid: string }) {
  const max = Math.max(1, ...rows.map((r) => r.value));
  return (
    <section class="card" data-testid={testid} aria-labelledby={`${testid}-title`}>
      <h2 id={`${testid}-title`}>{title}</h2>
      {rows.length === 0 && <p class="muted">Nothing failed in this range.</p>}
      <ol class="plain">
        {rows.map((r, i) => {
          const share = r.of !== undefined ? r.value / Math.max(1, r.of) : r.value / max;
          return (
            <li key={i} class="hbar">
              <span class="small" title={r.title}>
                {r.href ? <a href={r.href}>{r.label}</a> : r.label}
              </span>
              <svg class="hbar-track" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">
                <rect class="bar-fail" x="0" y="0" height="10" width={100 * share} />
              </svg>
              <span class="small">
                {r.value}
                {r.of !== undefined && ` of ${r.of} (${Math.round(100 * share)}%)`}
              </span>
            </li>
          );
        })}
      </ol>
    </section>
  );
}

export function InsightsPage() {
  const { params } = useLocation();
  const search = params.toString();
  const range = useMemo(() => timeRange(params), [search]);
  const filter = useMemo(() => ({ startedAfter: range.startedAfter, ...(range.startedBefore && { startedBefore: range.startedBefore }) }), [range]);
  const q = useQuery<{ evaluationInsights: Insights }>(INSIGHTS, { filter });
  const stats = q.data?.evaluationInsights;
  const count = (key: keyof Day) => stats?.days.reduce((n, d) => n + (d[key] as number), 0) ?? 0;
  const ttv = stats?.timeToVerdict;
  const rangeKey = params.get('range') ?? '1d';
  return (
    <Page
      title="Insights"
      actions={
        <>
          <label for="insights-range">Time range</label>
          <select
            id="insights-range"
            value={rangeKey === 'custom' ? '30d' : rangeKey}
            onChange={(e) => navigate(`/insights?${withParam(params, 'range', (e.target as HTMLSelectElement).value).toString()}`)}
          >
            {RANGES.filter(([k]) => k !== 'custom').map(([k, l]) => (
              <option key={k} value={k}>
                {l}
              </option>
            ))}
          </select>
        </>
      }
    >
      <ErrorNote error={q.error} />
      {stats && (
        <>
          <section class="card figures" aria-label="Totals" data-testid="insights-totals">
            <div class="figure">
              <strong>{count('total')}</strong> evaluations
            </div>
            <div class="figure">
              <strong>{count('pass')}</strong> <span aria-hidden="true">✓ </span>passed
            </div>
            <div class="figure">
              <strong>{count('fail')}</strong> <span aria-hidden="true">✗ </span>failed
            </div>
            <div class="figure">
              <strong>{count('canceled')}</strong> <span aria-hidden="true">⊘ </span>canceled
            </div>
            <div class="figure">
              <strong>{count('inProgress')}</strong> <span aria-hidden="true">◷ </span>in progress
            </div>
            <div class="figure" data-testid="time-to-verdict">
              <strong>{ttv?.p50Seconds != null ? formatDuration(ttv.p50Seconds) : '—'}</strong> median time to verdict
              {ttv?.p95Seconds != null && (
                <span class="small muted">
                  {' '}
                  (p95 {formatDuration(ttv.p95Seconds)}, longest {formatDuration(ttv.maxSeconds ?? ttv.p95Seconds)}, {ttv.decided} decided)
                </span>
              )}
            </div>
          </section>
          <DailyChart days={stats.days} />
          <div class="two">
            <Bars
              title="Most failing gates"
              testid="failing-gates"
              rows={stats.mostFailingGates.map((g) => ({
                label: `${g.service} / ${g.env} / ${g.identifier}`,
                value: g.failures,
                of: g.evaluations,
                href: g.gateId ? `/gates/${g.gateId}` : undefined,
              }))}
            />
            <Bars
              title="Most failing rules"
              testid="failing-rules"
              rows={stats.mostFailingRules.map((r) => ({
                label: `${r.name} (${r.service} / ${r.env})`,
                value: r.failures,
                of: r.evaluations,
                href: `/evaluations?${new URLSearchParams({ ruleName: r.name, service: r.service, env: r.env, status: 'FAIL' }).toString()}`,
              }))}
            />
          </div>
          <Bars
            title={`Most common failure reasons${stats.failedRulesComplete ? '' : ` (the newest ${stats.failedRulesRead} failed rules)`}`}
            testid="failure-reasons"
            rows={stats.failureReasons.map((r) => ({ label: r.label, value: r.count, title: `Newest: ${r.sample}` }))}
          />
        </>
      )}
    </Page>
  );
}
