import { useState } from 'preact/hooks';
import { ApiError, gql } from '../api.ts';
import { CopyLine, DryRunBadge, Duration, ErrorNote, Field, Page, StatusBadge, Time, useQuery, useSubscription } from '../components.tsx';
import { navigate } from '../router.ts';
import { can, type Viewer } from '../viewer.ts';
import { EvaluationStatusCell } from './evaluations.tsx';

const RULE_OPTIONS = `options { __typename
  ... on MonitorRuleOptions { query monitorIds { id groups } duration warmup failOnNoData failOnNoGroupsFound }
  ... on FddRuleOptions { duration excludedResources allowedResources alpha minRelativeIncrease newErrorTypes onInsufficientData }
  ... on MetricRuleOptions { query baselineQuery apm { metric resource window minRequests } bound margin duration warmup interval failureLimit consecutiveSuccessLimit failOnNoData }
  ... on WebhookRuleOptions { url headers { name } timeout retries mode interval duration }
  ... on FreezeRuleOptions { calendars { name cron duration timeZone } adHoc incidentQuery duration } }`;

const EVALUATION = `id service env identifier version primaryTag dryRun justInTime onSourceError status reportedStatus passedWithoutEvidence
  startedAt decidedAt finishedAt evaluationUrl rerunOf revision triggeredBy gateId
  override { verdict reason at by { id name } replaced }
  overrides { verdict reason at by { id name } replaced }
  gate { id service env identifier dryRun }
  rules { id ruleId name type dryRun status reason insufficientData consecutiveSourceErrors startedAt windowStartsAt windowEndsAt finishedAt
    ${RULE_OPTIONS}
    evidence { matchedMonitors { id name groups } failingGroups { monitorId monitorName group state since url } }
    fddEvidence { version baseline baselineVersions canaryRequests largestEValue familyEValue familyThreshold insufficientData requestsNeeded
      faultyResources { scope name eValue threshold jointly canary { requests errors errorRate } baseline { requests errors errorRate } }
      newErrorTypes { errorType count resources sampleMessage eValue threshold jointly } }
    metricEvidence { source query baselineQuery apmMetric resource window version baselineVersions bound margin failureLimit consecutiveSuccessLimit planned failures noData sourceErrors
      points { at value text baseline limit result note requests baselineRequests } }
    webhookEvidence { url passedCalls refused calls { call at passed status error body bodyTruncated location attempts earlierAttempts } }
    freezeEvidence { freezes { active kind name startedAt endsAt endsAtLeast cron timeZone freezeId setBy service monitorId group url } } }`;

const QUERY = `query Evaluation($id: ID!) { evaluation(id: $id) { ${EVALUATION} } }`;
const LIVE = `subscription EvaluationUpdated($id: ID!) { evaluationUpdated(id: $id) { ${EVALUATION} } }`;
/**
 * A finished evaluation still changes when someone overrides it, and evaluationUpdated has ended
 * by then: the overrides of its gate's evaluations, narrowed to this one on arrival.
 */
const LATER = `subscription EvaluationLater($filter: EvaluationFilter) { evaluationEvents(filter: $filter) { ${EVALUATION} } }`;

type Options = { __typename: 'MonitorRuleOptions' | 'FddRuleOptions' | 'MetricRuleOptions' | 'WebhookRuleOptions' | 'FreezeRuleOptions' } & Record<string, any>;

interface RuleEvaluation {
  id: string;
  ruleId: string | null;
  name: string;
  type: string;
  dryRun: boolean;
  status: string;
  reason: string | null;
  insufficientData: boolean;
  consecutiveSourceErrors: number;
  startedAt: string;
  windowStartsAt: string;
  windowEndsAt: string;
  finishedAt: string | null;
  options: Options;
  evidence: {
    matchedMonitors: Array<{ id: string; name: string; groups: number }>;
    failingGroups: Array<{ monitorId: string; monitorName: string; group: string; state: string; since: string; url: string }>;
  } | null;
  fddEvidence: any;
  metricEvidence: MetricEvidenceView | null;
  webhookEvidence: WebhookEvidenceView | null;
  freezeEvidence: { freezes: FreezeFound[] } | null;
}

interface WebhookCall {
  call: number;
  at: string;
  passed: boolean;
  status: number | null;
  error: string | null;
  body: string | null;
  bodyTruncated: boolean;
  location: string | null;
  attempts: number;
  earlierAttempts: string[];
}

interface WebhookEvidenceView {
  url: string;
  passedCalls: number;
  refused: string | null;
  calls: WebhookCall[];
}

interface FreezeFound {
  active: boolean;
  kind: 'CALENDAR' | 'AD_HOC' | 'INCIDENT';
  name: string;
  startedAt: string | null;
  endsAt: string | null;
  endsAtLeast: boolean;
  cron: string | null;
  timeZone: string | null;
  freezeId: string | null;
  setBy: string | null;
  service: string | null;
  monitorId: string | null;
  group: string | null;
  url: string | null;
}

interface MetricPoint {
  at: string;
  value: number | null;
  text: string;
  baseline: number | null;
  limit: number | null;
  result: 'PASS' | 'FAIL' | 'NO_DATA';
  note: string | null;
  requests: number | null;
  baselineRequests: number | null;
}

interface MetricEvidenceView {
  source: 'PROMETHEUS' | 'APM' | null;
  query: string | null;
  baselineQuery: string | null;
  apmMetric: string | null;
  resource: string | null;
  window: number | null;
  version: string | null;
  baselineVersions: string[];
  bound: string | null;
  margin: number | null;
  failureLimit: number | null;
  consecutiveSuccessLimit: number | null;
  planned: number | null;
  failures: number | null;
  noData: number | null;
  sourceErrors: number | null;
  points: MetricPoint[];
}

type Override = { verdict: string; reason: string; at: string; by: { id: string; name: string }; replaced: string };

interface Evaluation {
  id: string;
  service: string;
  env: string;
  identifier: string;
  version: string | null;
  primaryTag: string | null;
  dryRun: boolean;
  justInTime: boolean;
  onSourceError: string;
  status: string;
  reportedStatus: string;
  passedWithoutEvidence: boolean;
  startedAt: string;
  decidedAt: string | null;
  finishedAt: string | null;
  evaluationUrl: string;
  rerunOf: string | null;
  revision: number;
  triggeredBy: string;
  gateId: string | null;
  gate: { id: string; service: string; env: string; identifier: string; dryRun: boolean } | null;
  override: Override | null;
  overrides: Override[];
  rules: RuleEvaluation[];
}

const shellQuote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`);

/** Output options without their nulls (and __typename), as an input takes them. */
const withoutNulls = (o: Record<string, any>): Record<string, unknown> =>
  Object.fromEntries(
    Object.entries(o)
      .filter(([k, v]) => v !== null && k !== '__typename')
      .map(([k, v]) => [k, v && typeof v === 'object' && !Array.isArray(v) ? withoutNulls(v) : v]),
  );

const INPUT_KEYS: Record<Options['__typename'], string> = {
  MonitorRuleOptions: 'monitor',
  FddRuleOptions: 'faultyDeploymentDetection',
  MetricRuleOptions: 'metric',
  WebhookRuleOptions: 'webhook',
  FreezeRuleOptions: 'freeze',
};

/** RuleOptions (as evaluated) back to RuleOptionsInput, to trigger the same just-in-time rules again. */
function optionsInput(o: Options): Record<string, unknown> {
  const clean = withoutNulls(o);
  if (o.__typename === 'WebhookRuleOptions') {
    // Header values are never shown: the line carries a placeholder to fill in.
    clean.headers = (o.headers ?? []).map((h: { name: string }) => ({ name: h.name, value: '…' }));
    if (o.mode === 'ONCE') {
      delete clean.interval;
      delete clean.duration;
    }
  }
  if (o.__typename === 'FreezeRuleOptions') clean.calendars = (o.calendars ?? []).map(withoutNulls);
  return { [INPUT_KEYS[o.__typename]]: clean };
}

function triggerInput(e: Evaluation): Record<string, unknown> {
  return {
    service: e.service,
    env: e.env,
    identifier: e.identifier,
    ...(e.version && { version: e.version }),
    ...(e.primaryTag && { primaryTag: e.primaryTag }),
    ...(e.justInTime && {
      configuration: { dryRun: e.dryRun, onSourceError: e.onSourceError, rules: e.rules.map((r) => ({ name: r.name, dryRun: r.dryRun, options: optionsInput(r.options) })) },
    }),
  };
}

function Reproduce({ e }: { e: Evaluation }) {
  const origin = location.origin;
  const cli = [
    'tollgate evaluate',
    `--url ${shellQuote(origin)}`,
    `--service ${shellQuote(e.service)}`,
    `--env ${shellQuote(e.env)}`,
    ...(e.identifier !== 'default' ? [`--identifier ${shellQuote(e.identifier)}`] : []),
    ...(e.version ? [`--version ${shellQuote(e.version)}`] : []),
    ...(e.primaryTag ? [`--primary-tag ${shellQuote(e.primaryTag)}`] : []),
  ].join(' ');
  const body = JSON.stringify({ query: 'mutation($i: EvaluateGateInput!) { evaluateGate(input: $i) { id status evaluationUrl } }', variables: { i: triggerInput(e) } });
  const curl = `curl -sS ${shellQuote(`${origin}/graphql`)} -H "Authorization: Bearer $TOLLGATE_API_KEY" -H 'Content-Type: application/json' -d ${shellQuote(body)}`;
  return (
    <section class="card" aria-labelledby="reproduce-title">
      <h2 id="reproduce-title">Trigger it again</h2>
      <p class="muted small">With an API key allowed to evaluate in {e.env} in TOLLGATE_API_KEY.</p>
      {e.justInTime ? (
        <p class="muted small">Just-in-time rules: the curl line carries them; the CLI needs them in a --config file.</p>
      ) : (
        <CopyLine label="tollgate evaluate" text={`TOLLGATE_API_KEY=… ${cli}`} />
      )}
      <CopyLine label="curl" text={curl} />
    </section>
  );
}

function Timeline({ e }: { e: Evaluation }) {
  const events: Array<{ at: string; text: string; status?: string }> = [{ at: e.startedAt, text: `Triggered by ${e.triggeredBy}` }];
  for (const r of e.rules) {
    if (r.windowStartsAt > r.startedAt) events.push({ at: r.windowStartsAt, text: `${r.name}: warmup over, window opens` });
    if (r.finishedAt) events.push({ at: r.finishedAt, text: `${r.name} decided`, status: r.status });
  }
  if (e.decidedAt) events.push({ at: e.decidedAt, text: 'Verdict', status: e.status });
  if (e.finishedAt && e.finishedAt !== e.decidedAt) events.push({ at: e.finishedAt, text: 'Last rule finished' });
  events.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  return (
    <section class="card" aria-labelledby="timeline-title">
      <h2 id="timeline-title">Timeline</h2>
      <ol class="timeline" data-testid="timeline">
        {events.map((ev, i) => (
          <li key={i}>
            <Time at={ev.at} /> <span>{ev.text}</span> {ev.status && <StatusBadge status={ev.status} />}
          </li>
        ))}
        {!e.finishedAt && (
          <li class="muted">
            <span aria-hidden="true">◷ </span>
            {e.status === 'IN_PROGRESS' ? 'Waiting for the rules…' : 'Dry-run rules still running…'}
          </li>
        )}
      </ol>
    </section>
  );
}

const pct = (x: unknown) => (typeof x === 'number' ? `${(x * 100).toFixed(x < 0.01 ? 3 : 2)}%` : '—');
const num = (x: unknown) =>
  typeof x === 'number' ? (Math.abs(x) >= 1e6 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(2) : x.toLocaleString(undefined, { maximumFractionDigits: 2 })) : '—';

/** A test's evidence against its threshold; one that failed with the family's joint evidence says so. */
function Against({ test, ev }: { test: any; ev: any }) {
  if (!test.jointly)
    return (
      <>
        {num(test.eValue)} ≥ {num(test.threshold)}
      </>
    );
  return (
    <>
      {num(test.eValue)} of {num(test.threshold)} alone; with the other tests {num(ev.familyEValue)} ≥ {num(ev.familyThreshold)}
    </>
  );
}

function FddEvidence({ ev, rule }: { ev: any; rule: RuleEvaluation }) {
  if (!ev || typeof ev !== 'object') return <p class="muted small">No evidence recorded yet.</p>;
  const watchesNewTypes = rule.options.__typename === 'FddRuleOptions' && rule.options.newErrorTypes === true;
  const faulty: any[] = Array.isArray(ev.faultyResources) ? ev.faultyResources : [];
  const newTypes: any[] = Array.isArray(ev.newErrorTypes) ? ev.newErrorTypes : [];
  return (
    <div class="evidence" data-testid="fdd-evidence">
      <p class="small">
        Version <strong>{ev.version ?? '—'}</strong> against {ev.baseline === 'LOOKBACK' ? 'the hour before' : 'concurrent traffic'}
        {Array.isArray(ev.baselineVersions) && ev.baselineVersions.length > 0 && ` (${ev.baselineVersions.join(', ')})`}; {num(ev.canaryRequests)} requests of the new version
        {typeof ev.largestEValue === 'number' && <>; largest evidence {num(ev.largestEValue)}</>}
        {ev.insufficientData && <>; not enough traffic to decide{ev.requestsNeeded ? ` (about ${num(ev.requestsNeeded)} requests needed)` : ''}</>}.
      </p>
      {faulty.length > 0 && (
        <table class="compact">
          <caption>Faulty resources</caption>
          <thead>
            <tr>
              <th scope="col">Resource</th>
              <th scope="col">Baseline requests / errors / rate</th>
              <th scope="col">New version requests / errors / rate</th>
              <th scope="col">Evidence vs threshold</th>
            </tr>
          </thead>
          <tbody>
            {faulty.map((f, i) => (
              <tr key={i}>
                <td>{f.name ?? f.resource ?? f.scope}</td>
                <td>
                  {num(f.baseline?.requests)} / {num(f.baseline?.errors)} / {pct(f.baseline?.errorRate)}
                </td>
                <td>
                  {num(f.canary?.requests)} / {num(f.canary?.errors)} / {pct(f.canary?.errorRate)}
                </td>
                <td>
                  <Against test={f} ev={ev} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <div data-testid="fdd-new-error-types">
        {newTypes.length > 0 ? (
          <table class="compact">
            <caption>New error types</caption>
            <thead>
              <tr>
                <th scope="col">Error type</th>
                <th scope="col">Count</th>
                <th scope="col">Resources</th>
                <th scope="col">Sample message</th>
                <th scope="col">Evidence vs threshold</th>
              </tr>
            </thead>
            <tbody>
              {newTypes.map((t, i) => (
                <tr key={i}>
                  <td>{t.errorType}</td>
                  <td>{num(t.count)}</td>
                  <td>{Array.isArray(t.resources) ? t.resources.join(', ') : '—'}</td>
                  <td>
                    <code>{t.sampleMessage ?? '—'}</code>
                  </td>
                  <td>
                    <Against test={t} ev={ev} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          // The evidence lists only the new types that counted: say what their absence means.
          <p class="small muted">
            {watchesNewTypes
              ? `No new error type${rule.status === 'IN_PROGRESS' ? ' so far' : ''}: every error type ${ev.version ? `version ${ev.version}` : 'the new version'} raised was one the baseline also raised in the last day, or too rare to stand out.`
              : 'New error types are not checked by this rule (newErrorTypes is off).'}
          </p>
        )}
      </div>
    </div>
  );
}

interface Transition {
  at: string;
  from: string | null;
  to: string;
  group: string;
  message: string | null;
}

function MonitorEvidence({ rule, transitions }: { rule: RuleEvaluation; transitions: Record<string, Transition[]> | undefined }) {
  const ev = rule.evidence;
  if (!ev) return <p class="muted small">No evidence recorded yet.</p>;
  const end = rule.finishedAt ?? new Date().toISOString();
  return (
    <div class="evidence" data-testid="monitor-evidence">
      {ev.matchedMonitors.length === 0 ? (
        <p class="small">No monitor matched.</p>
      ) : (
        <table class="compact">
          <caption>Monitors judged</caption>
          <thead>
            <tr>
              <th scope="col">Monitor</th>
              <th scope="col">Groups</th>
              <th scope="col">Failing groups</th>
              <th scope="col">Transitions in the window</th>
            </tr>
          </thead>
          <tbody>
            {ev.matchedMonitors.map((m) => {
              const failing = ev.failingGroups.filter((g) => g.monitorId === m.id);
              const inWindow = (transitions?.[m.id] ?? []).filter((t) => t.at >= rule.windowStartsAt && t.at <= end);
              return (
                <tr key={m.id}>
                  <td>
                    <a href={`/monitors/${m.id}`}>{m.name}</a>
                  </td>
                  <td>{m.groups}</td>
                  <td>
                    {failing.length === 0 ? (
                      <span class="muted">none</span>
                    ) : (
                      <ul class="plain">
                        {failing.map((g) => (
                          <li key={g.group}>
                            <StatusBadge status={g.state} /> {g.group} since <Time at={g.since} />
                          </li>
                        ))}
                      </ul>
                    )}
                  </td>
                  <td>
                    {transitions === undefined ? (
                      <span class="muted">…</span>
                    ) : inWindow.length === 0 ? (
                      <span class="muted">none</span>
                    ) : (
                      <ul class="plain">
                        {inWindow.map((t, i) => (
                          <li key={i}>
                            <Time at={t.at} /> {t.group}: {t.from ?? '—'} → <StatusBadge status={t.to} />
                          </li>
                        ))}
                      </ul>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </div>
  );
}

/** Four significant digits: an error ratio of 0.0105 must not read 0.01. */
const sig = (x: number | null) => (x === null ? '—' : String(Number(x.toPrecision(4))));

const RESULT_STATUS: Record<MetricPoint['result'], string> = { PASS: 'PASS', FAIL: 'FAIL', NO_DATA: 'NO_DATA' };

/** Every point measured: when, the value, the baseline and the limit it was held to; the points that broke the bound stand out. */
function MetricEvidence({ ev, rule }: { ev: MetricEvidenceView | null; rule: RuleEvaluation }) {
  if (!ev) return <p class="muted small">No evidence recorded yet.</p>;
  const relative = ev.points.some((p) => p.baseline !== null) || (ev.bound ?? '').endsWith('%');
  const apm = ev.source === 'APM';
  return (
    <div class="evidence" data-testid="metric-evidence">
      <p class="small">
        {apm ? (
          <>
            APM {ev.apmMetric} of {ev.resource ?? 'the whole service'} over {ev.window} s{ev.version ? ` for version ${ev.version}` : ''}
            {relative && ev.baselineVersions.length > 0 && `, against ${ev.baselineVersions.join(', ')}`}
          </>
        ) : (
          <>
            <code data-testid="metric-query">{ev.query}</code>
            {ev.baselineQuery && (
              <>
                {' '}
                against <code>{ev.baselineQuery}</code>
              </>
            )}
          </>
        )}
        ; bound <strong>{ev.bound}</strong>
        {relative && ' of the baseline'}
        {ev.margin ? ` (margin ${ev.margin})` : ''}; {ev.points.length} of {ev.planned ?? '—'} point(s) measured, {ev.failures ?? 0} outside
        {ev.noData ? `, ${ev.noData} without data` : ''}; failureLimit {ev.failureLimit ?? 0}
        {ev.consecutiveSuccessLimit ? `, consecutiveSuccessLimit ${ev.consecutiveSuccessLimit}` : ''}.
      </p>
      {ev.points.length > 0 && (
        <div class="table-wrap">
          <table class="compact" data-testid="metric-points">
            <caption>Points</caption>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Value</th>
                {relative && <th scope="col">Baseline</th>}
                <th scope="col">Limit</th>
                <th scope="col">Result</th>
                {apm && <th scope="col">Requests</th>}
              </tr>
            </thead>
            <tbody>
              {ev.points.map((p) => (
                <tr key={p.at} data-testid="metric-point" data-result={p.result} class={p.result === 'FAIL' ? 'point-fail' : undefined}>
                  <td>
                    <Time at={p.at} />
                  </td>
                  <td>{p.text}</td>
                  {relative && <td>{sig(p.baseline)}</td>}
                  <td>{p.limit === null ? '—' : `${(ev.bound ?? '').split(' ')[0]} ${sig(p.limit)}`}</td>
                  <td>
                    <StatusBadge status={RESULT_STATUS[p.result]} />
                    {p.note && <span class="small muted"> {p.note}</span>}
                  </td>
                  {apm && (
                    <td>
                      {num(p.requests)}
                      {relative && ` / ${num(p.baselineRequests)}`}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {rule.status === 'IN_PROGRESS' && ev.points.length === 0 && <p class="muted small">No point measured yet.</p>}
    </div>
  );
}

function WebhookEvidence({ ev }: { ev: WebhookEvidenceView | null }) {
  if (!ev) return <p class="muted small">No call made yet.</p>;
  return (
    <div class="evidence" data-testid="webhook-evidence">
      {ev.refused && <p class="small">Not called: {ev.refused}.</p>}
      {ev.calls.length > 0 && (
        <table class="compact">
          <caption>
            Calls to <code>{ev.url}</code> ({ev.passedCalls} passed)
          </caption>
          <thead>
            <tr>
              <th scope="col">Call</th>
              <th scope="col">At</th>
              <th scope="col">Answer</th>
              <th scope="col">Tries</th>
              <th scope="col">First KB of the answer</th>
            </tr>
          </thead>
          <tbody>
            {ev.calls.map((c) => (
              <tr key={`${c.call}-${c.attempts}`} data-testid="webhook-call">
                <td>{c.call}</td>
                <td>
                  <Time at={c.at} />
                </td>
                <td>
                  <StatusBadge status={c.passed ? 'PASS' : 'FAIL'} /> {c.status !== null ? `HTTP ${c.status}` : c.error}
                  {c.location && <div class="small muted">redirect to {c.location} (not followed)</div>}
                </td>
                <td>
                  {c.attempts}
                  {c.earlierAttempts.length > 0 && <div class="small muted">before: {c.earlierAttempts.join(', ')}</div>}
                </td>
                <td>
                  {c.body ? (
                    <pre class="answer">
                      {c.body}
                      {c.bodyTruncated ? '…' : ''}
                    </pre>
                  ) : (
                    <span class="muted">—</span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function describeMetric(o: Options): string {
  const source = o.query ? `PromQL “${o.query}”` : `APM ${String(o.apm?.metric ?? '').toLowerCase()} of ${o.apm?.resource ?? 'the whole service'}`;
  const window = o.duration === 0 ? 'measured once' : `every ${o.interval} s for ${o.duration} s`;
  return `${source}; bound ${o.bound}${o.margin ? ` (margin ${o.margin})` : ''}; ${window}${o.warmup ? ` after ${o.warmup} s warmup` : ''}; failureLimit ${o.failureLimit}${o.consecutiveSuccessLimit ? `; ${o.consecutiveSuccessLimit} consecutive successes pass` : ''}${o.failOnNoData ? '; no data fails' : ''}`;
}

const FREEZE_KINDS: Record<FreezeFound['kind'], string> = { CALENDAR: 'Calendar window', AD_HOC: 'Ad-hoc freeze', INCIDENT: 'Incident' };

function FreezeEvidence({ ev }: { ev: { freezes: FreezeFound[] } | null }) {
  if (!ev) return <p class="muted small">No evidence recorded yet.</p>;
  if (ev.freezes.length === 0)
    return (
      <p class="small" data-testid="freeze-evidence">
        No freeze applied.
      </p>
    );
  return (
    <div class="evidence" data-testid="freeze-evidence">
      <table class="compact">
        <caption>Freezes found</caption>
        <thead>
          <tr>
            <th scope="col">Freeze</th>
            <th scope="col">Since</th>
            <th scope="col">Until</th>
            <th scope="col">Now</th>
          </tr>
        </thead>
        <tbody>
          {ev.freezes.map((f, i) => (
            <tr key={i} data-testid="freeze-row">
              <td>
                {FREEZE_KINDS[f.kind]}: {f.kind === 'INCIDENT' && f.monitorId ? <a href={`/monitors/${f.monitorId}`}>{f.name}</a> : <strong>{f.name}</strong>}
                {f.kind === 'CALENDAR' && (
                  <span class="small muted">
                    {' '}
                    ({f.cron}, {f.timeZone})
                  </span>
                )}
                {f.kind === 'AD_HOC' && (
                  <span class="small muted">
                    {' '}
                    set by {f.setBy}
                    {f.service ? ` for ${f.service}` : ''}
                  </span>
                )}
                {f.kind === 'INCIDENT' && f.group && f.group !== '*' && <span class="small muted"> ({f.group})</span>}
              </td>
              <td>{f.startedAt ? <Time at={f.startedAt} /> : '—'}</td>
              <td>
                {f.endsAt ? (
                  <>
                    {f.endsAtLeast && 'at least '}
                    <Time at={f.endsAt} />
                  </>
                ) : f.kind === 'INCIDENT' ? (
                  'the monitor recovers'
                ) : (
                  'lifted'
                )}
              </td>
              <td>{f.active ? <strong>in force</strong> : <span class="muted">over</span>}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

const hours = (s: number) => (s % 3600 === 0 ? `${s / 3600} h` : s % 60 === 0 ? `${s / 60} min` : `${s} s`);

function describeOptions(o: Options): string {
  if (o.__typename === 'MetricRuleOptions') return describeMetric(o);
  if (o.__typename === 'WebhookRuleOptions') {
    const headers = o.headers?.length ? ` with ${o.headers.map((h: { name: string }) => h.name).join(', ')}` : '';
    const calls = o.mode === 'POLL' ? `every ${o.interval} s for ${o.duration} s, every answer must pass` : 'once';
    return `POST ${o.url}${headers}; ${calls}; timeout ${o.timeout} s, ${o.retries} retries`;
  }
  if (o.__typename === 'FreezeRuleOptions') {
    const parts = [
      ...(o.calendars ?? []).map(
        (c: { name: string | null; cron: string; duration: number; timeZone: string }) => `${c.name ?? 'window'} (${c.cron}, ${c.timeZone}, ${hours(c.duration)})`,
      ),
      ...(o.adHoc ? ['ad-hoc freezes'] : []),
      ...(o.incidentQuery ? [`incidents of “${o.incidentQuery}”`] : []),
    ];
    return `${parts.join('; ')}; ${o.duration ? `waits up to ${o.duration} s for a freeze to end` : 'checked once'}`;
  }
  if (o.__typename === 'MonitorRuleOptions') {
    const target = o.query ? `query “${o.query}”` : `monitors ${(o.monitorIds ?? []).map((m: { id: string }) => m.id).join(', ')}`;
    return `${target}; window ${o.duration} s${o.warmup ? ` after ${o.warmup} s warmup` : ''}${o.failOnNoData ? '; NO_DATA fails' : ''}${o.failOnNoGroupsFound ? '; no groups fails' : ''}`;
  }
  return `window ${o.duration} s; alpha ${o.alpha}; min. increase +${Math.round(o.minRelativeIncrease * 100)}%${o.newErrorTypes ? '; new error types' : ''}; too little traffic: ${o.onInsufficientData}`;
}

const RULE_TYPE_NAMES: Record<string, string> = {
  MONITOR: 'Monitor',
  FAULTY_DEPLOYMENT_DETECTION: 'Faulty deployment detection',
  METRIC: 'Metric',
  WEBHOOK: 'Webhook',
  FREEZE: 'Freeze',
};

function RuleCard({ rule, transitions }: { rule: RuleEvaluation; transitions: Record<string, Transition[]> | undefined }) {
  return (
    <li class={`rule rule-${rule.status.toLowerCase()}`} data-testid="rule-row" data-rule-name={rule.name} data-status={rule.status}>
      <div class="rule-head">
        <h3>{rule.name}</h3>
        <StatusBadge status={rule.status} testid="rule-status" />
        {rule.dryRun && (rule.status === 'FAIL' ? <DryRunBadge status="FAIL" /> : <span class="badge badge-dry">dry run</span>)}
        <span class="muted small">{RULE_TYPE_NAMES[rule.type] ?? rule.type}</span>
      </div>
      <p class="reason" data-testid="rule-reason">
        {rule.reason ?? <span class="muted">No decision yet.</span>}
      </p>
      <p class="small muted">
        Window <Time at={rule.windowStartsAt} /> – <Time at={rule.windowEndsAt} />
        {rule.finishedAt && (
          <>
            {' '}
            · decided <Time at={rule.finishedAt} />
          </>
        )}
        {rule.consecutiveSourceErrors > 0 && ` · ${rule.consecutiveSourceErrors} source errors in a row`}
        {rule.insufficientData && ' · too little data to decide'}
      </p>
      <p class="small muted">{describeOptions(rule.options)}</p>
      <details open={rule.status === 'FAIL'}>
        <summary>Evidence</summary>
        {rule.type === 'MONITOR' ? (
          <MonitorEvidence rule={rule} transitions={transitions} />
        ) : rule.type === 'METRIC' ? (
          <MetricEvidence ev={rule.metricEvidence} rule={rule} />
        ) : rule.type === 'WEBHOOK' ? (
          <WebhookEvidence ev={rule.webhookEvidence} />
        ) : rule.type === 'FREEZE' ? (
          <FreezeEvidence ev={rule.freezeEvidence} />
        ) : (
          <FddEvidence ev={rule.fddEvidence} rule={rule} />
        )}
      </details>
    </li>
  );
}

/** The transitions of the monitors the rules matched (one request, at most 20 monitors). */
function useTransitions(e: Evaluation | undefined) {
  const ids = [...new Set((e?.rules ?? []).flatMap((r) => r.evidence?.matchedMonitors.map((m) => m.id) ?? []))].slice(0, 20);
  const query = ids.length
    ? `query Transitions { ${ids.map((id, i) => `m${i}: monitor(id: ${JSON.stringify(id)}) { id transitions(last: 100) { at from to group message } }`).join(' ')} }`
    : '';
  const result = useQuery<Record<string, { id: string; transitions: Transition[] } | null>>(
    query || '{ __typename }',
    { status: e?.status, finished: e?.finishedAt },
    { skip: !query },
  );
  if (!query || !result.data) return undefined;
  const out: Record<string, Transition[]> = {};
  for (const m of Object.values(result.data)) if (m && typeof m === 'object' && 'id' in m) out[m.id] = m.transitions;
  return out;
}

/** Who overrode the verdict, when, why and what it replaced: above everything else the verdict says. */
function OverrideNote({ o, earlier }: { o: Override; earlier: Override[] }) {
  return (
    <div class="override-note" role="note" data-testid="override">
      <strong>
        Overridden to <StatusBadge status={o.verdict} /> by <span data-testid="override-by">{o.by.name}</span>
      </strong>{' '}
      <Time at={o.at} />: callers are told {o.verdict}, where the gate said <span data-testid="override-replaced">{o.replaced}</span>. The real status and every rule's evidence are
      kept below.
      <blockquote data-testid="override-reason">{o.reason}</blockquote>
      {earlier.length > 0 && (
        <details data-testid="override-history">
          <summary>
            {earlier.length} earlier override{earlier.length === 1 ? '' : 's'}
          </summary>
          <ol>
            {earlier.map((x) => (
              <li key={x.at}>
                <StatusBadge status={x.verdict} /> by {x.by.name} <Time at={x.at} /> (replaced {x.replaced}): {x.reason}
              </li>
            ))}
          </ol>
        </details>
      )}
    </div>
  );
}

/** The override form: a verdict and the reason, which the API requires (1–1000 characters). */
function OverrideForm({ e, onDone, onCancel }: { e: Evaluation; onDone: (next: Evaluation) => void; onCancel: () => void }) {
  const [verdict, setVerdict] = useState(e.reportedStatus === 'PASS' ? 'FAIL' : 'PASS');
  const [reason, setReason] = useState('');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [general, setGeneral] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (ev: Event) => {
    ev.preventDefault();
    setErrors({});
    setGeneral(null);
    if (!reason.trim()) return setErrors({ 'input.reason': 'reason must say why the verdict is overridden' });
    setBusy(true);
    try {
      const d = await gql<{ overrideEvaluation: Evaluation }>(
        `mutation OverrideEvaluation($id: ID!, $verdict: OverrideVerdict!, $reason: String!) { overrideEvaluation(id: $id, verdict: $verdict, reason: $reason) { ${EVALUATION} } }`,
        { id: e.id, verdict, reason },
      );
      onDone(d.overrideEvaluation);
    } catch (err) {
      const error = err instanceof ApiError ? err : new ApiError([{ message: String(err) }]);
      const fields = error.fieldErrors();
      setErrors(fields);
      if (!fields['input.reason']) setGeneral(error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card" onSubmit={submit} aria-labelledby="override-title" noValidate data-testid="override-form">
      <h2 id="override-title">Override the verdict</h2>
      <p class="small muted">
        Callers (CI, hooks, datadog-ci) are told your verdict instead of the gate's{e.finishedAt ? '' : ', and the evaluation stops now'}. The real status and evidence stay, and
        the override is audited.
      </p>
      <fieldset class="group">
        <legend>Verdict</legend>
        {(['PASS', 'FAIL'] as const).map((v) => (
          <label key={v} class="inline-check">
            <input type="radio" name="verdict" value={v} checked={verdict === v} onChange={() => setVerdict(v)} />{' '}
            {v === 'PASS' ? 'Pass: let the deploy through' : 'Fail: stop the deploy'}
          </label>
        ))}
      </fieldset>
      <Field label="Reason" name="input.reason" errors={errors} hint="why; shown with the evaluation and in the audit log">
        {(p) => <textarea {...p} rows={3} maxLength={1000} value={reason} onInput={(x) => setReason((x.target as HTMLTextAreaElement).value)} />}
      </Field>
      <ErrorNote error={general} />
      <div class="form-actions">
        <button type="submit" disabled={busy}>
          Override to {verdict}
        </button>
        <button type="button" class="secondary" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

export function EvaluationPage({ id, who }: { id: string; who: Viewer }) {
  const q = useQuery<{ evaluation: Evaluation | null }>(QUERY, { id });
  const [live, setLive] = useState<Evaluation | null>(null);
  const [actionError, setActionError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const [overriding, setOverriding] = useState(false);
  const fetched = q.data?.evaluation ?? null;
  // The newer of the two: a refetch after a reconnection, or the last live snapshot.
  const e = live && live.id === id && live.revision >= (fetched?.revision ?? -1) ? live : fetched;
  const liveError = useSubscription<{ evaluationUpdated: Evaluation }>(LIVE, { id }, (d) => setLive(d.evaluationUpdated), { skip: !fetched || !!fetched.finishedAt });
  const sameGate = fetched && {
    service: [fetched.service],
    env: [fetched.env],
    identifier: [fetched.identifier],
    ...(fetched.version ? { version: [fetched.version] } : {}),
    overridden: true,
  };
  const laterError = useSubscription<{ evaluationEvents: Evaluation }>(
    LATER,
    { filter: sameGate },
    (d) => {
      if (d.evaluationEvents.id === id) setLive(d.evaluationEvents);
    },
    { skip: !e?.finishedAt },
  );
  const transitions = useTransitions(e ?? undefined);

  const act = async (mutation: 'cancelEvaluation' | 'rerunEvaluation') => {
    setBusy(true);
    setActionError(null);
    try {
      const d = await gql<Record<string, Evaluation>>(`mutation($id: ID!) { ${mutation}(id: $id) { ${EVALUATION} } }`, { id });
      const next = d[mutation]!;
      if (mutation === 'rerunEvaluation') navigate(`/evaluations/${next.id}`);
      else setLive(next);
    } catch (err) {
      setActionError(err instanceof ApiError ? err : new ApiError([{ message: String(err) }]));
    } finally {
      setBusy(false);
    }
  };

  if (q.loading && !e) return <Page title="Evaluation">Loading…</Page>;
  if (!e)
    return (
      <Page title="Evaluation not found">
        <ErrorNote error={q.error} />
        {!q.error && <p>No evaluation {id} that this key may see.</p>}
        <a href="/evaluations">All evaluations</a>
      </Page>
    );
  const writer = can(who, 'EVALUATIONS_WRITE');
  const overrider = can(who, 'EVALUATIONS_OVERRIDE');
  return (
    <Page
      title={
        <>
          {e.service}{' '}
          <span class="muted">
            / {e.env} / {e.identifier}
          </span>
        </>
      }
      actions={
        (writer || overrider) && (
          <>
            {overrider && !overriding && (
              <button type="button" class="secondary" onClick={() => setOverriding(true)}>
                Override…
              </button>
            )}
            {writer && e.status === 'IN_PROGRESS' && (
              <button type="button" class="secondary" disabled={busy} onClick={() => act('cancelEvaluation')}>
                Cancel
              </button>
            )}
            {writer && (
              <button type="button" class="secondary" disabled={busy} onClick={() => act('rerunEvaluation')}>
                Rerun
              </button>
            )}
          </>
        )
      }
    >
      <ErrorNote error={actionError} />
      <ErrorNote error={(liveError ?? laterError) && `Live updates stopped: ${(liveError ?? laterError)!.message}`} />
      {overriding && (
        <OverrideForm
          e={e}
          onCancel={() => setOverriding(false)}
          onDone={(next) => {
            setOverriding(false);
            setLive(next);
          }}
        />
      )}
      <section class="verdict card" aria-labelledby="verdict-title" data-testid="verdict">
        <h2 id="verdict-title" class="visually-hidden">
          Verdict
        </h2>
        <div class="verdict-main">
          <EvaluationStatusCell e={e} />
          {e.status === 'IN_PROGRESS' && (
            <span class="live small" data-testid="live-indicator" data-state="live">
              <span class="dot dot-live" aria-hidden="true" /> updating live
            </span>
          )}
        </div>
        {e.override && <OverrideNote o={e.override} earlier={(e.overrides ?? []).slice(0, -1).reverse()} />}
        {e.dryRun && !e.override && <p class="small">Dry run: callers were told {e.reportedStatus}. The real status is shown.</p>}
        {e.passedWithoutEvidence && <p class="small">Passed without evidence: at least one rule found no data to judge.</p>}
        <dl class="facts">
          <dt>Version</dt>
          <dd>{e.version ?? '—'}</dd>
          {e.primaryTag && (
            <>
              <dt>Primary tag</dt>
              <dd>{e.primaryTag}</dd>
            </>
          )}
          <dt>Triggered by</dt>
          <dd data-testid="triggered-by">{e.triggeredBy}</dd>
          <dt>Gate</dt>
          <dd>{e.gate ? <a href={`/gates/${e.gate.id}`}>{`${e.gate.service} / ${e.gate.env} / ${e.gate.identifier}`}</a> : e.justInTime ? 'just-in-time rules' : 'deleted'}</dd>
          <dt>Started</dt>
          <dd>
            <Time at={e.startedAt} />
          </dd>
          <dt>Finished</dt>
          <dd>
            <Time at={e.finishedAt} /> (<Duration from={e.startedAt} to={e.finishedAt} />)
          </dd>
          <dt>On source error</dt>
          <dd>{e.onSourceError}</dd>
          {e.rerunOf && (
            <>
              <dt>Rerun of</dt>
              <dd>
                <a href={`/evaluations/${e.rerunOf}`}>{e.rerunOf}</a>
              </dd>
            </>
          )}
        </dl>
      </section>
      <section aria-labelledby="rules-title">
        <h2 id="rules-title">Rules</h2>
        <ul class="rules">
          {e.rules.map((r) => (
            <RuleCard key={r.id} rule={r} transitions={transitions} />
          ))}
        </ul>
      </section>
      <div class="two">
        <Timeline e={e} />
        <Reproduce e={e} />
      </div>
    </Page>
  );
}
