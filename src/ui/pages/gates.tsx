import { useEffect, useState } from 'preact/hooks';
import { ApiError, gql } from '../api.ts';
import { ErrorNote, Field, Page, Time, useQuery, useSubscription } from '../components.tsx';
import { navigate, useLocation, withParams } from '../router.ts';
import { can, type Viewer } from '../viewer.ts';
import { GateBacktests } from './backtests.tsx';
import { EvaluationStatusCell } from './evaluations.tsx';

const RULE_FIELDS = `id name type dryRun updatedAt updatedBy options { __typename
  ... on MonitorRuleOptions { query monitorIds { id groups } duration warmup failOnNoData failOnNoGroupsFound }
  ... on FddRuleOptions { duration excludedResources allowedResources alpha minRelativeIncrease newErrorTypes onInsufficientData }
  ... on MetricRuleOptions { query baselineQuery apm { metric resource window minRequests } bound margin duration warmup interval failureLimit consecutiveSuccessLimit failOnNoData }
  ... on WebhookRuleOptions { url headers { name } timeout retries mode interval duration }
  ... on FreezeRuleOptions { calendars { name cron duration timeZone } adHoc incidentQuery duration } }`;
const GATE_FIELDS = `id service env identifier dryRun onSourceError createdAt createdBy updatedAt updatedBy rules { ${RULE_FIELDS} }`;

interface Rule {
  id: string;
  name: string;
  type: string;
  dryRun: boolean;
  updatedAt: string;
  updatedBy: string;
  options: Record<string, any> & { __typename: string };
}
interface Gate {
  id: string;
  service: string;
  env: string;
  identifier: string;
  dryRun: boolean;
  onSourceError: string;
  createdAt: string;
  createdBy: string;
  updatedAt: string;
  updatedBy: string;
  rules: Rule[];
}
interface LastEvaluation {
  id: string;
  status: string;
  dryRun: boolean;
  startedAt: string;
  override: { verdict: string; by: { name: string } } | null;
}

const asError = (err: unknown) => (err instanceof ApiError ? err : new ApiError([{ message: String(err) }]));

// ---- rule form (create and edit), every input named by the API's field path ----

type RuleTypeName = 'MONITOR' | 'FAULTY_DEPLOYMENT_DETECTION' | 'METRIC' | 'WEBHOOK' | 'FREEZE';

/** Each type's key in RuleOptionsInput (and in the API's field paths). */
const OPTION_KEYS: Record<RuleTypeName, string> = {
  MONITOR: 'monitor',
  FAULTY_DEPLOYMENT_DETECTION: 'faultyDeploymentDetection',
  METRIC: 'metric',
  WEBHOOK: 'webhook',
  FREEZE: 'freeze',
};

interface RuleDraft {
  name: string;
  type: RuleTypeName;
  dryRun: boolean;
  query: string;
  duration: string;
  warmup: string;
  failOnNoData: boolean;
  failOnNoGroupsFound: boolean;
  alpha: string;
  minRelativeIncrease: string;
  excludedResources: string;
  newErrorTypes: boolean;
  onInsufficientData: string;
  /** Metric rules: `query` holds the PromQL. */
  metricSource: 'PROMQL' | 'APM';
  baselineQuery: string;
  apmMetric: string;
  resource: string;
  apmWindow: string;
  minRequests: string;
  bound: string;
  margin: string;
  interval: string;
  failureLimit: string;
  consecutiveSuccessLimit: string;
  url: string;
  /** One header a line, `Name: value`; a bare `Name` keeps the stored value (values are never shown). */
  headers: string;
  timeout: string;
  retries: string;
  mode: string;
  /** One calendar window a line: `cron | duration seconds | time zone | name`. */
  calendars: string;
  adHoc: boolean;
  incidentQuery: string;
}

const blankRule = (): RuleDraft => ({
  name: '',
  type: 'MONITOR',
  dryRun: false,
  query: '',
  duration: '',
  warmup: '',
  failOnNoData: true,
  failOnNoGroupsFound: false,
  alpha: '',
  minRelativeIncrease: '',
  excludedResources: '',
  newErrorTypes: true,
  onInsufficientData: 'PASS',
  metricSource: 'PROMQL',
  baselineQuery: '',
  apmMetric: 'ERROR_RATE',
  resource: '',
  apmWindow: '',
  minRequests: '',
  bound: '',
  margin: '',
  interval: '',
  failureLimit: '',
  consecutiveSuccessLimit: '',
  url: '',
  headers: '',
  timeout: '',
  retries: '',
  mode: 'ONCE',
  calendars: '',
  adHoc: true,
  incidentQuery: '',
});

const text = (v: unknown) => (v === null || v === undefined ? '' : String(v));

function draftOf(rule: Rule): RuleDraft {
  const o = rule.options;
  return {
    ...blankRule(),
    name: rule.name,
    type: rule.type as RuleDraft['type'],
    dryRun: rule.dryRun,
    query: o.query ?? '',
    duration: String(o.duration ?? ''),
    warmup: String(o.warmup ?? ''),
    failOnNoData: o.failOnNoData ?? true,
    failOnNoGroupsFound: o.failOnNoGroupsFound ?? false,
    alpha: o.alpha !== undefined ? String(o.alpha) : '',
    minRelativeIncrease: o.minRelativeIncrease !== undefined ? String(o.minRelativeIncrease) : '',
    excludedResources: (o.excludedResources ?? []).join('\n'),
    newErrorTypes: o.newErrorTypes ?? true,
    onInsufficientData: o.onInsufficientData ?? 'PASS',
    metricSource: o.apm ? 'APM' : 'PROMQL',
    baselineQuery: text(o.baselineQuery),
    apmMetric: o.apm?.metric ?? 'ERROR_RATE',
    resource: text(o.apm?.resource),
    apmWindow: text(o.apm?.window),
    minRequests: text(o.apm?.minRequests),
    bound: text(o.bound),
    margin: text(o.margin),
    // A once webhook reports interval and duration 0: the form leaves them empty.
    interval: o.__typename === 'WebhookRuleOptions' && o.mode !== 'POLL' ? '' : text(o.interval),
    failureLimit: text(o.failureLimit),
    consecutiveSuccessLimit: text(o.consecutiveSuccessLimit),
    url: o.url ?? '',
    headers: (o.headers ?? []).map((h: { name: string }) => h.name).join('\n'),
    timeout: o.timeout !== undefined ? String(o.timeout) : '',
    retries: o.retries !== undefined ? String(o.retries) : '',
    mode: o.mode ?? 'ONCE',
    ...(o.__typename === 'WebhookRuleOptions' && o.mode !== 'POLL' && { duration: '' }),
    calendars: (o.calendars ?? [])
      .map((c: { name: string | null; cron: string; duration: number; timeZone: string }) => [c.cron, c.duration, c.timeZone, ...(c.name ? [c.name] : [])].join(' | '))
      .join('\n'),
    adHoc: o.adHoc ?? true,
    incidentQuery: o.incidentQuery ?? '',
  };
}

const orOmit = (s: string) => (s.trim() === '' ? undefined : s);

function metricInput(d: RuleDraft): Record<string, unknown> {
  const source =
    d.metricSource === 'PROMQL'
      ? { query: d.query, baselineQuery: orOmit(d.baselineQuery) }
      : { apm: { metric: d.apmMetric, resource: orOmit(d.resource), window: numberOrOmit(d.apmWindow), minRequests: numberOrOmit(d.minRequests) } };
  return {
    ...source,
    bound: orOmit(d.bound),
    margin: numberOrOmit(d.margin),
    duration: numberOrOmit(d.duration),
    warmup: numberOrOmit(d.warmup),
    interval: numberOrOmit(d.interval),
    failureLimit: numberOrOmit(d.failureLimit),
    consecutiveSuccessLimit: numberOrOmit(d.consecutiveSuccessLimit),
    failOnNoData: d.failOnNoData,
  };
}

const lines = (text: string) =>
  text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);

/** `Name: value` lines as headers; a line without a colon names a header whose stored value stays. */
const headersOf = (text: string) =>
  lines(text).map((line) => {
    const colon = line.indexOf(':');
    return colon < 0 ? { name: line } : { name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() };
  });

/** `cron | duration | zone | name` lines as calendar windows (the API judges each part). */
const calendarsOf = (text: string) =>
  lines(text).map((line) => {
    const [cron = '', duration = '', timeZone = '', name = ''] = line.split('|').map((p) => p.trim());
    return { cron, duration: duration === '' ? undefined : Number(duration), timeZone, ...(name && { name }) };
  });

/** A number field as the API takes it: empty is "the default"; anything else is sent for the API to judge. */
const numberOrOmit = (s: string) => (s.trim() === '' ? undefined : Number(s));

function optionsOf(d: RuleDraft): Record<string, unknown> {
  switch (d.type) {
    case 'MONITOR':
      return { query: d.query, duration: numberOrOmit(d.duration), warmup: numberOrOmit(d.warmup), failOnNoData: d.failOnNoData, failOnNoGroupsFound: d.failOnNoGroupsFound };
    case 'WEBHOOK':
      return {
        url: d.url,
        headers: headersOf(d.headers),
        timeout: numberOrOmit(d.timeout),
        retries: numberOrOmit(d.retries),
        mode: d.mode,
        ...(d.mode === 'POLL' && { interval: numberOrOmit(d.interval), duration: numberOrOmit(d.duration) }),
      };
    case 'METRIC':
      return metricInput(d);
    case 'FREEZE':
      return { calendars: calendarsOf(d.calendars), adHoc: d.adHoc, incidentQuery: d.incidentQuery.trim() || undefined, duration: numberOrOmit(d.duration) };
    default:
      return {
        duration: numberOrOmit(d.duration),
        alpha: numberOrOmit(d.alpha),
        minRelativeIncrease: numberOrOmit(d.minRelativeIncrease),
        excludedResources: lines(d.excludedResources),
        newErrorTypes: d.newErrorTypes,
        onInsufficientData: d.onInsufficientData,
      };
  }
}

function ruleInput(d: RuleDraft): Record<string, unknown> {
  return { name: d.name, dryRun: d.dryRun, options: { [OPTION_KEYS[d.type]]: optionsOf(d) } };
}

/** A number the browser cannot parse is refused here, at its field, before the API is asked. */
function localErrors(d: RuleDraft, prefix: string): Record<string, string> {
  const errors: Record<string, string> = {};
  const opt = `${prefix}.options.${OPTION_KEYS[d.type]}`;
  const check = (value: string, field: string, integer: boolean) => {
    if (value.trim() === '') return;
    const n = Number(value);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) errors[`${opt}.${field}`] = `${field} must be ${integer ? 'a whole number' : 'a number'}`;
  };
  check(d.duration, 'duration', true);
  if (d.type === 'METRIC') {
    for (const [value, field] of [
      [d.warmup, 'warmup'],
      [d.interval, 'interval'],
      [d.failureLimit, 'failureLimit'],
      [d.consecutiveSuccessLimit, 'consecutiveSuccessLimit'],
      [d.apmWindow, 'apm.window'],
      [d.minRequests, 'apm.minRequests'],
    ] as const)
      check(value, field, true);
    check(d.margin, 'margin', false);
  } else if (d.type === 'MONITOR') check(d.warmup, 'warmup', true);
  else if (d.type === 'WEBHOOK') {
    check(d.timeout, 'timeout', true);
    check(d.retries, 'retries', true);
    check(d.interval, 'interval', true);
  } else if (d.type === 'FAULTY_DEPLOYMENT_DETECTION') {
    check(d.alpha, 'alpha', false);
    check(d.minRelativeIncrease, 'minRelativeIncrease', false);
  }
  return errors;
}

/** The metric rule's own fields (docs/rules/metric.md); `query` holds its PromQL. */
function MetricFields({ d, set, opt, prefix, errors }: { d: RuleDraft; set: (d: RuleDraft) => void; opt: string; prefix: string; errors: Record<string, string> }) {
  const text = (key: keyof RuleDraft) => (e: Event) => set({ ...d, [key]: (e.target as HTMLInputElement).value });
  const number = (label: string, key: keyof RuleDraft, field: string, hint?: string) => (
    <Field label={label} name={`${opt}.${field}`} errors={errors} hint={hint}>
      {(p) => <input {...p} inputMode="numeric" value={d[key] as string} onInput={text(key)} />}
    </Field>
  );
  return (
    <>
      <Field label="Source" name={`${prefix}.metricSource`} errors={errors}>
        {(p) => (
          <select {...p} value={d.metricSource} onChange={text('metricSource')}>
            <option value="PROMQL">PromQL (Prometheus)</option>
            <option value="APM">Tollgate's APM store</option>
          </select>
        )}
      </Field>
      {d.metricSource === 'PROMQL' ? (
        <>
          <Field label="PromQL query" name={`${opt}.query`} errors={errors} hint={'one value; version="{{version}}" matches the evaluated version'}>
            {(p) => <textarea {...p} rows={2} value={d.query} onInput={text('query')} />}
          </Field>
          <Field label="Baseline query (optional)" name={`${opt}.baselineQuery`} errors={errors} hint={'default: the query with version!="{{version}}"'}>
            {(p) => <textarea {...p} rows={2} value={d.baselineQuery} onInput={text('baselineQuery')} />}
          </Field>
        </>
      ) : (
        <>
          <Field label="APM metric" name={`${opt}.apm.metric`} errors={errors}>
            {(p) => (
              <select {...p} value={d.apmMetric} onChange={text('apmMetric')}>
                <option value="ERROR_RATE">error rate</option>
                <option value="ERROR_COUNT">error count</option>
                <option value="HITS">requests (hits)</option>
                <option value="P95">p95 latency (ms)</option>
                <option value="P99">p99 latency (ms)</option>
              </select>
            )}
          </Field>
          <Field label="Resource (optional)" name={`${opt}.apm.resource`} errors={errors} hint="e.g. GET /cart; empty: the whole service">
            {(p) => <input {...p} value={d.resource} onInput={text('resource')} />}
          </Field>
          {number('Traffic behind each point (seconds)', 'apmWindow', 'apm.window', 'default: the interval')}
          {number('Fewest requests for a value', 'minRequests', 'apm.minRequests', 'default 1')}
        </>
      )}
      <Field label="Bound" name={`${opt}.bound`} errors={errors} hint="<= 0.02 (absolute) or <= +10% (relative to the baseline)">
        {(p) => <input {...p} value={d.bound} onInput={text('bound')} />}
      </Field>
      <Field label="Margin (relative bounds)" name={`${opt}.margin`} errors={errors} hint="absolute slack, e.g. 0.001">
        {(p) => <input {...p} inputMode="decimal" value={d.margin} onInput={text('margin')} />}
      </Field>
      {number('Interval (seconds)', 'interval', 'interval', '10–3600; default 60')}
      {number('Warmup (seconds)', 'warmup', 'warmup')}
      {number('Failure limit', 'failureLimit', 'failureLimit', 'points allowed outside the bound; default 0')}
      {number('Consecutive successes that pass', 'consecutiveSuccessLimit', 'consecutiveSuccessLimit', 'default 0: off')}
      <div class="inline-check">
        <input type="checkbox" id={`${prefix}-metric-nodata`} checked={d.failOnNoData} onChange={(e) => set({ ...d, failOnNoData: (e.target as HTMLInputElement).checked })} />
        <label for={`${prefix}-metric-nodata`}>A point without data counts as outside the bound</label>
      </div>
    </>
  );
}

const DURATION_LABELS: Record<RuleTypeName, [string, string]> = {
  MONITOR: ['Window (seconds)', '0 checks once; at most 7200'],
  FAULTY_DEPLOYMENT_DETECTION: ['Window (seconds)', 'at most 7200; default 900'],
  METRIC: ['Window (seconds)', '0 checks once; at most 7200'],
  WEBHOOK: ['Keep polling for (seconds)', 'poll mode: 1–7200'],
  FREEZE: ['Wait for a freeze to end (seconds)', '0 checks once; at most 7200'],
};

function WebhookFields({ d, set, opt, errors }: { d: RuleDraft; set: (d: RuleDraft) => void; opt: string; errors: Record<string, string> }) {
  const text = (key: keyof RuleDraft) => (e: Event) => set({ ...d, [key]: (e.target as HTMLInputElement).value });
  return (
    <>
      <Field label="URL" name={`${opt}.url`} errors={errors} hint="its host must be on TOLLGATE_WEBHOOK_ALLOWED_HOSTS">
        {(p) => <input {...p} type="url" value={d.url} onInput={text('url')} />}
      </Field>
      <Field
        label="Headers (Name: value, one a line)"
        name={`${opt}.headers`}
        errors={errors}
        hint="values are stored encrypted and never shown; a name alone keeps the stored value"
      >
        {(p) => <textarea {...p} rows={2} value={d.headers} onInput={text('headers')} />}
      </Field>
      <Field label="Timeout (seconds)" name={`${opt}.timeout`} errors={errors} hint="1–60; default 10">
        {(p) => <input {...p} inputMode="numeric" value={d.timeout} onInput={text('timeout')} />}
      </Field>
      <Field label="Retries" name={`${opt}.retries`} errors={errors} hint="0–5; default 2 (no answer, 408, 425, 429, 5xx)">
        {(p) => <input {...p} inputMode="numeric" value={d.retries} onInput={text('retries')} />}
      </Field>
      <Field label="Mode" name={`${opt}.mode`} errors={errors}>
        {(p) => (
          <select {...p} value={d.mode} onChange={text('mode')}>
            <option value="ONCE">call once</option>
            <option value="POLL">poll until the window ends</option>
          </select>
        )}
      </Field>
      {d.mode === 'POLL' && (
        <Field label="Interval (seconds)" name={`${opt}.interval`} errors={errors} hint="5–3600; default 60">
          {(p) => <input {...p} inputMode="numeric" value={d.interval} onInput={text('interval')} />}
        </Field>
      )}
    </>
  );
}

function FreezeFields({ d, set, prefix, opt, errors }: { d: RuleDraft; set: (d: RuleDraft) => void; prefix: string; opt: string; errors: Record<string, string> }) {
  const text = (key: keyof RuleDraft) => (e: Event) => set({ ...d, [key]: (e.target as HTMLInputElement).value });
  return (
    <>
      <Field
        label="Calendar windows (cron | seconds | time zone | name, one a line)"
        name={`${opt}.calendars`}
        errors={errors}
        hint="e.g. 0 18 * * FRI | 223200 | Europe/Paris | weekend"
      >
        {(p) => <textarea {...p} rows={2} value={d.calendars} onInput={text('calendars')} />}
      </Field>
      <Field label="Incident query" name={`${opt}.incidentQuery`} errors={errors} hint="frozen while a matching monitor is ALERT, e.g. service:checkout">
        {(p) => <input {...p} value={d.incidentQuery} onInput={text('incidentQuery')} />}
      </Field>
      <div class="inline-check">
        <input type="checkbox" id={`${prefix}-adhoc`} checked={d.adHoc} onChange={(e) => set({ ...d, adHoc: (e.target as HTMLInputElement).checked })} />
        <label for={`${prefix}-adhoc`}>Ad-hoc freezes of the environment apply</label>
      </div>
    </>
  );
}

function RuleFields({ d, set, prefix, errors, lockType }: { d: RuleDraft; set: (d: RuleDraft) => void; prefix: string; errors: Record<string, string>; lockType?: boolean }) {
  const opt = `${prefix}.options.${OPTION_KEYS[d.type]}`;
  const text = (key: keyof RuleDraft) => (e: Event) => set({ ...d, [key]: (e.target as HTMLInputElement).value });
  const check = (key: keyof RuleDraft) => (e: Event) => set({ ...d, [key]: (e.target as HTMLInputElement).checked });
  return (
    <div class="form-grid">
      <Field label="Rule name" name={`${prefix}.name`} errors={errors}>
        {(p) => <input {...p} value={d.name} onInput={text('name')} required />}
      </Field>
      <Field label="Rule type" name={`${prefix}.type`} errors={errors}>
        {(p) => (
          <select {...p} value={d.type} onChange={text('type')} disabled={lockType}>
            <option value="MONITOR">Monitor</option>
            <option value="FAULTY_DEPLOYMENT_DETECTION">Faulty deployment detection</option>
            <option value="METRIC">Metric (PromQL or APM)</option>
            <option value="WEBHOOK">Webhook</option>
            <option value="FREEZE">Freeze</option>
          </select>
        )}
      </Field>
      {d.type === 'MONITOR' && (
        <Field label="Monitor query" name={`${opt}.query`} errors={errors} hint="e.g. service:checkout env:prod">
          {(p) => <input {...p} value={d.query} onInput={text('query')} />}
        </Field>
      )}
      {d.type === 'WEBHOOK' && <WebhookFields d={d} set={set} opt={opt} errors={errors} />}
      {d.type === 'FREEZE' && <FreezeFields d={d} set={set} prefix={prefix} opt={opt} errors={errors} />}
      {(d.type !== 'WEBHOOK' || d.mode === 'POLL') && (
        <Field label={DURATION_LABELS[d.type][0]} name={`${opt}.duration`} errors={errors} hint={DURATION_LABELS[d.type][1]}>
          {(p) => <input {...p} inputMode="numeric" value={d.duration} onInput={text('duration')} />}
        </Field>
      )}
      {d.type === 'WEBHOOK' || d.type === 'FREEZE' ? null : d.type === 'METRIC' ? (
        <MetricFields d={d} set={set} opt={opt} prefix={prefix} errors={errors} />
      ) : d.type === 'MONITOR' ? (
        <>
          <Field label="Warmup (seconds)" name={`${opt}.warmup`} errors={errors}>
            {(p) => <input {...p} inputMode="numeric" value={d.warmup} onInput={text('warmup')} />}
          </Field>
          <div class="inline-check">
            <input type="checkbox" id={`${prefix}-nodata`} checked={d.failOnNoData} onChange={check('failOnNoData')} />
            <label for={`${prefix}-nodata`}>NO_DATA fails the rule</label>
          </div>
          <div class="inline-check">
            <input type="checkbox" id={`${prefix}-nogroups`} checked={d.failOnNoGroupsFound} onChange={check('failOnNoGroupsFound')} />
            <label for={`${prefix}-nogroups`}>No groups found fails the rule</label>
          </div>
        </>
      ) : (
        <>
          <Field label="Alpha (false-failure budget)" name={`${opt}.alpha`} errors={errors} hint="(0, 0.2]; default 0.01">
            {(p) => <input {...p} inputMode="decimal" value={d.alpha} onInput={text('alpha')} />}
          </Field>
          <Field label="Minimum relative increase" name={`${opt}.minRelativeIncrease`} errors={errors} hint="0.5 = +50%">
            {(p) => <input {...p} inputMode="decimal" value={d.minRelativeIncrease} onInput={text('minRelativeIncrease')} />}
          </Field>
          <Field label="Excluded resources (one a line)" name={`${opt}.excludedResources`} errors={errors}>
            {(p) => <textarea {...p} rows={2} value={d.excludedResources} onInput={text('excludedResources')} />}
          </Field>
          <Field label="Too little traffic" name={`${opt}.onInsufficientData`} errors={errors}>
            {(p) => (
              <select {...p} value={d.onInsufficientData} onChange={text('onInsufficientData')}>
                <option value="PASS">passes</option>
                <option value="FAIL">fails</option>
              </select>
            )}
          </Field>
          <div class="inline-check">
            <input type="checkbox" id={`${prefix}-newtypes`} checked={d.newErrorTypes} onChange={check('newErrorTypes')} />
            <label for={`${prefix}-newtypes`}>Fail on new error types</label>
          </div>
        </>
      )}
      <div class="inline-check">
        <input type="checkbox" id={`${prefix}-dry`} checked={d.dryRun} onChange={check('dryRun')} />
        <label for={`${prefix}-dry`}>Rule in dry run (recorded, never counted)</label>
      </div>
    </div>
  );
}

/** Errors the API named, keyed by field; those it could not place go in `general`. */
function placeErrors(err: ApiError, known: (field: string) => boolean): { fields: Record<string, string>; general: ApiError | null } {
  const fields = err.fieldErrors();
  const placed = Object.keys(fields).some(known);
  return { fields, general: placed ? null : err };
}

/**
 * A form whose errors are shown at the fields they name: the local checks first, then `run`;
 * the API's errors go to the field named by extensions.field when the form has it, else below.
 */
function useFieldForm() {
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [general, setGeneral] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (local: Record<string, string>, run: () => Promise<void>) => {
    setGeneral(null);
    setErrors(local);
    if (Object.keys(local).length) return;
    setBusy(true);
    try {
      await run();
    } catch (err) {
      const placed = placeErrors(asError(err), (f) => !!document.querySelector(`[name="${CSS.escape(f)}"]`));
      setErrors(placed.fields);
      setGeneral(placed.general);
    } finally {
      setBusy(false);
    }
  };
  return { errors, general, busy, submit };
}

/** One line about a stored rule's options. */
function ruleSummary(o: Rule['options']): string {
  switch (o.__typename) {
    case 'MonitorRuleOptions':
      return `${o.query ? `query “${o.query}”` : 'monitors by id'}; window ${o.duration} s${o.warmup ? `, warmup ${o.warmup} s` : ''}`;
    case 'MetricRuleOptions':
      return `${o.query ? `PromQL “${o.query}”` : `APM ${o.apm.metric.toLowerCase()} of ${o.apm.resource ?? 'the whole service'}`}; bound ${o.bound}; ${o.duration ? `every ${o.interval} s for ${o.duration} s` : 'measured once'}; failureLimit ${o.failureLimit}`;
    case 'WebhookRuleOptions':
      return `POST ${o.url}${o.headers.length ? ` with ${o.headers.map((h: { name: string }) => h.name).join(', ')}` : ''}; ${o.mode === 'POLL' ? `every ${o.interval} s for ${o.duration} s` : 'once'}`;
    case 'FreezeRuleOptions':
      return (
        [
          ...o.calendars.map((c: { name: string | null; cron: string; timeZone: string }) => `${c.name ?? c.cron} (${c.timeZone})`),
          ...(o.adHoc ? ['ad-hoc freezes'] : []),
          ...(o.incidentQuery ? [`incidents of “${o.incidentQuery}”`] : []),
        ].join('; ') + (o.duration ? `; waits up to ${o.duration} s` : '; checked once')
      );
    default:
      return `window ${o.duration} s; alpha ${o.alpha}; +${Math.round(o.minRelativeIncrease * 100)}%`;
  }
}

// ---- list ----

function CreateGate({ onCreated }: { onCreated: (g: Gate) => void }) {
  const [service, setService] = useState('');
  const [env, setEnv] = useState('');
  const [identifier, setIdentifier] = useState('');
  const [dryRun, setDryRun] = useState(false);
  const [onSourceError, setOnSourceError] = useState('FAIL');
  const [withRule, setWithRule] = useState(true);
  const [rule, setRule] = useState<RuleDraft>(blankRule);
  const { errors, general, busy, submit: submitForm } = useFieldForm();
  const submit = (e: Event) => {
    e.preventDefault();
    return submitForm(withRule ? localErrors(rule, 'input.rules[0]') : {}, async () => {
      const input = { service, env, ...(identifier && { identifier }), dryRun, onSourceError, ...(withRule && { rules: [ruleInput(rule)] }) };
      const d = await gql<{ createGate: Gate }>(`mutation CreateGate($input: CreateGateInput!) { createGate(input: $input) { ${GATE_FIELDS} } }`, { input });
      onCreated(d.createGate);
    });
  };
  return (
    <form class="card" onSubmit={submit} aria-labelledby="create-gate-title" noValidate>
      <h2 id="create-gate-title">New gate</h2>
      <div class="form-grid">
        <Field label="Service" name="input.service" errors={errors}>
          {(p) => <input {...p} value={service} onInput={(e) => setService((e.target as HTMLInputElement).value)} />}
        </Field>
        <Field label="Env" name="input.env" errors={errors}>
          {(p) => <input {...p} value={env} onInput={(e) => setEnv((e.target as HTMLInputElement).value)} />}
        </Field>
        <Field label="Identifier" name="input.identifier" errors={errors} hint="default: default">
          {(p) => <input {...p} value={identifier} onInput={(e) => setIdentifier((e.target as HTMLInputElement).value)} />}
        </Field>
        <Field label="When a data source keeps failing" name="input.onSourceError" errors={errors}>
          {(p) => (
            <select {...p} value={onSourceError} onChange={(e) => setOnSourceError((e.target as HTMLSelectElement).value)}>
              <option value="FAIL">the rule fails</option>
              <option value="PASS">the rule passes</option>
            </select>
          )}
        </Field>
      </div>
      <div class="inline-check">
        <input type="checkbox" id="new-gate-dry" checked={dryRun} onChange={(e) => setDryRun((e.target as HTMLInputElement).checked)} />
        <label for="new-gate-dry">Dry run (callers are always told PASS)</label>
      </div>
      <div class="inline-check">
        <input type="checkbox" id="new-gate-rule" checked={withRule} onChange={(e) => setWithRule((e.target as HTMLInputElement).checked)} />
        <label for="new-gate-rule">With a first rule</label>
      </div>
      {withRule && (
        <fieldset class="group">
          <legend>First rule</legend>
          <RuleFields d={rule} set={setRule} prefix="input.rules[0]" errors={errors} />
        </fieldset>
      )}
      <ErrorNote error={general} />
      <div class="form-actions">
        <button type="submit" disabled={busy}>
          Create gate
        </button>
      </div>
    </form>
  );
}

const GATES = `query Gates($filter: GateFilter, $first: Int!, $after: String) {
  gates(filter: $filter, first: $first, after: $after) { totalCount edges { node { ${GATE_FIELDS} } } pageInfo { endCursor hasNextPage } }
}`;
const GATE_EVENTS = `subscription GateEvents { gateEvents { kind actor at gate { ${GATE_FIELDS} } } }`;
const PAGE = 20;

/** The last evaluations of each listed gate, in one request (aliases; at most 20 gates a page). */
function useLastEvaluations(ids: string[]) {
  const query = ids.length
    ? `query LastEvaluations { ${ids.map((id, i) => `g${i}: evaluations(filter: { gateId: ${JSON.stringify(id)} }, first: 3) { edges { node { id status dryRun startedAt override { verdict by { name } } } } }`).join(' ')} }`
    : '{ __typename }';
  const r = useQuery<Record<string, { edges: Array<{ node: LastEvaluation }> }>>(query, {}, { skip: ids.length === 0 });
  const out = new Map<string, LastEvaluation[]>(r.data ? ids.map((id, i) => [id, r.data![`g${i}`]?.edges.map((e) => e.node) ?? []]) : []);
  return { byGate: out, refetch: r.refetch };
}

export function GatesPage({ who }: { who: Viewer }) {
  const { params } = useLocation();
  const service = params.get('service') ?? '';
  const env = params.get('env') ?? '';
  const after = params.get('after');
  const filter = { ...(service && { services: [service] }), ...(env && { envs: [env] }) };
  const q = useQuery<{ gates: { totalCount: number; edges: Array<{ node: Gate }>; pageInfo: { endCursor: string | null; hasNextPage: boolean } } }>(GATES, {
    filter,
    first: PAGE,
    after,
  });
  const gates = q.data?.gates.edges.map((e) => e.node) ?? [];
  const last = useLastEvaluations(gates.map((g) => g.id));
  const [creating, setCreating] = useState(false);
  const [svc, setSvc] = useState(service);
  const [en, setEn] = useState(env);
  useEffect(() => {
    setSvc(service);
    setEn(env);
  }, [service, env]);
  useSubscription<{ gateEvents: { kind: string } }>(GATE_EVENTS, {}, () => void q.refetch());
  const writer = can(who, 'GATES_WRITE');
  return (
    <Page
      title="Gates"
      actions={
        writer && (
          <button type="button" aria-expanded={creating} onClick={() => setCreating(!creating)}>
            {creating ? 'Close the form' : 'New gate'}
          </button>
        )
      }
    >
      {creating && <CreateGate onCreated={(g) => navigate(`/gates/${g.id}`)} />}
      {/* biome-ignore lint/a11y/useSemanticElements: a form is the search landmark; a <search> wrapper would add a box to lay out for nothing */}
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          navigate(withParams('/gates', { service: svc.trim(), env: en.trim() }));
        }}
      >
        <label for="gates-service">Service</label> <input id="gates-service" value={svc} onInput={(e) => setSvc((e.target as HTMLInputElement).value)} />{' '}
        <label for="gates-env">Env</label> <input id="gates-env" value={en} onInput={(e) => setEn((e.target as HTMLInputElement).value)} />{' '}
        <button type="submit" class="secondary">
          Filter
        </button>
      </form>
      <ErrorNote error={q.error} />
      <p class="summary" aria-live="polite">
        {q.data ? `${q.data.gates.totalCount} gate${q.data.gates.totalCount === 1 ? '' : 's'}` : q.error ? '' : 'Loading…'}
      </p>
      <div class="table-wrap">
        <table data-testid="gates-table">
          <caption class="visually-hidden">Gates</caption>
          <thead>
            <tr>
              <th scope="col">Gate</th>
              <th scope="col">Mode</th>
              <th scope="col">Rules</th>
              <th scope="col">Last evaluations</th>
              <th scope="col">Updated</th>
            </tr>
          </thead>
          <tbody>
            {gates.map((g) => (
              <tr key={g.id} data-testid="gate-row" data-id={g.id}>
                <td>
                  <a href={`/gates/${g.id}`}>
                    {g.service} / {g.env} / {g.identifier}
                  </a>
                </td>
                <td>
                  {g.dryRun ? (
                    <span class="badge badge-dry" data-testid="gate-dry-run">
                      dry run
                    </span>
                  ) : (
                    <span class="small">enforced</span>
                  )}
                </td>
                <td>
                  <ul class="plain small">
                    {g.rules.map((r) => (
                      <li key={r.id}>
                        {r.name}{' '}
                        <span class="muted">
                          ({r.type === 'MONITOR' ? 'monitor' : r.type === 'METRIC' ? 'metric' : 'FDD'}
                          {r.dryRun ? ', dry run' : ''})
                        </span>
                      </li>
                    ))}
                    {g.rules.length === 0 && <li class="muted">no rules</li>}
                  </ul>
                </td>
                <td>
                  <ul class="plain">
                    {(last.byGate.get(g.id) ?? []).map((e) => (
                      <li key={e.id}>
                        <a href={`/evaluations/${e.id}`}>
                          <EvaluationStatusCell e={e} />
                          <span class="visually-hidden"> started {new Date(e.startedAt).toLocaleString()}</span>
                        </a>
                      </li>
                    ))}
                  </ul>
                </td>
                <td>
                  <Time at={g.updatedAt} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {q.data?.gates.pageInfo.hasNextPage && (
        <p>
          <a href={withParams('/gates', { service, env, after: q.data.gates.pageInfo.endCursor })}>Next gates</a>
        </p>
      )}
    </Page>
  );
}

// ---- one gate ----

function RuleEditor({ gateId, rule, onDone }: { gateId: string; rule: Rule | null; onDone: () => void }) {
  const [d, setD] = useState<RuleDraft>(() => (rule ? draftOf(rule) : blankRule()));
  const { errors, general, busy, submit: submitForm } = useFieldForm();
  const submit = (e: Event) => {
    e.preventDefault();
    return submitForm(localErrors(d, 'input'), async () => {
      if (rule) await gql(`mutation($id: ID!, $input: UpdateRuleInput!) { updateRule(id: $id, input: $input) { id } }`, { id: rule.id, input: ruleInput(d) });
      else await gql(`mutation($gateId: ID!, $input: RuleInput!) { createRule(gateId: $gateId, input: $input) { id } }`, { gateId, input: ruleInput(d) });
      onDone();
    });
  };
  return (
    <form class="card" onSubmit={submit} noValidate aria-label={rule ? `Edit rule ${rule.name}` : 'New rule'}>
      <RuleFields d={d} set={setD} prefix="input" errors={errors} lockType={!!rule} />
      <ErrorNote error={general} />
      <div class="form-actions">
        <button type="submit" disabled={busy}>
          {rule ? 'Save rule' : 'Add rule'}
        </button>
        <button type="button" class="secondary" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function GateSettings({ gate, onSaved }: { gate: Gate; onSaved: () => void }) {
  const [dryRun, setDryRun] = useState(gate.dryRun);
  const [onSourceError, setOnSourceError] = useState(gate.onSourceError);
  const [error, setError] = useState<ApiError | null>(null);
  const [saved, setSaved] = useState(false);
  useEffect(() => {
    setDryRun(gate.dryRun);
    setOnSourceError(gate.onSourceError);
  }, [gate.dryRun, gate.onSourceError]);
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setSaved(false);
    try {
      await gql(`mutation($id: ID!, $input: UpdateGateInput!) { updateGate(id: $id, input: $input) { id } }`, { id: gate.id, input: { dryRun, onSourceError } });
      setSaved(true);
      onSaved();
    } catch (err) {
      setError(asError(err));
    }
  };
  return (
    <form class="card" onSubmit={submit} aria-labelledby="settings-title">
      <h2 id="settings-title">Settings</h2>
      <div class="inline-check">
        <input type="checkbox" id="gate-dry" checked={dryRun} onChange={(e) => setDryRun((e.target as HTMLInputElement).checked)} />
        <label for="gate-dry">Dry run (callers are always told PASS)</label>
      </div>
      <Field label="When a data source keeps failing" name="input.onSourceError" errors={error?.fieldErrors() ?? {}}>
        {(p) => (
          <select {...p} value={onSourceError} onChange={(e) => setOnSourceError((e.target as HTMLSelectElement).value)}>
            <option value="FAIL">the rule fails</option>
            <option value="PASS">the rule passes</option>
          </select>
        )}
      </Field>
      <ErrorNote error={error} />
      <div class="form-actions">
        <button type="submit">Save settings</button>
        {saved && <span role="status">Saved.</span>}
      </div>
    </form>
  );
}

export function GatePage({ id, who }: { id: string; who: Viewer }) {
  const q = useQuery<{ gate: Gate | null; evaluations: { edges: Array<{ node: LastEvaluation & { version: string | null; finishedAt: string | null } }> } }>(
    `query Gate($id: ID!) { gate(id: $id) { ${GATE_FIELDS} } evaluations(filter: { gateId: $id }, first: 10) { edges { node { id status dryRun startedAt finishedAt version override { verdict by { name } } } } } }`,
    { id },
  );
  const [editing, setEditing] = useState<string | null>(null);
  const [deleted, setDeleted] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [confirming, setConfirming] = useState(false);
  const [deletingRule, setDeletingRule] = useState<string | null>(null);
  const gate = q.data?.gate;
  useSubscription<{ gateEvents: { kind: string; actor: string; gate: Gate } }>(
    GATE_EVENTS,
    {},
    ({ gateEvents: ev }) => {
      if (ev.gate.id !== id) return;
      if (ev.kind === 'DELETED') setDeleted(ev.actor);
      else void q.refetch();
    },
    { skip: !gate },
  );
  const writer = can(who, 'GATES_WRITE');
  if (q.loading && !q.data) return <Page title="Gate">Loading…</Page>;
  if (!gate || deleted)
    return (
      <Page title={deleted ? 'Gate deleted' : 'Gate not found'}>
        <ErrorNote error={q.error} />
        <p>{deleted ? `${deleted} deleted this gate.` : `No gate ${id} that this key may see.`}</p>
        <a href="/gates">All gates</a>
      </Page>
    );
  const remove = async (mutation: 'deleteGate' | 'deleteRule', target: string) => {
    setError(null);
    try {
      await gql(`mutation($id: ID!) { ${mutation}(id: $id) }`, { id: target });
      if (mutation === 'deleteGate') navigate('/gates');
      else void q.refetch();
    } catch (err) {
      setError(asError(err));
    }
  };
  return (
    <Page
      title={
        <>
          {gate.service}{' '}
          <span class="muted">
            / {gate.env} / {gate.identifier}
          </span>{' '}
          {gate.dryRun && (
            <span class="badge badge-dry" data-testid="gate-dry-run">
              dry run
            </span>
          )}
        </>
      }
      actions={
        writer &&
        (confirming ? (
          <>
            <button type="button" class="danger" onClick={() => remove('deleteGate', gate.id)}>
              Delete the gate and its rules
            </button>
            <button type="button" class="secondary" onClick={() => setConfirming(false)}>
              Keep it
            </button>
          </>
        ) : (
          <button type="button" class="danger" onClick={() => setConfirming(true)}>
            Delete gate
          </button>
        ))
      }
    >
      <ErrorNote error={error} />
      <p class="small muted">
        Created by {gate.createdBy} <Time at={gate.createdAt} />; updated by {gate.updatedBy} <Time at={gate.updatedAt} />.
      </p>
      {writer && <GateSettings gate={gate} onSaved={() => void q.refetch()} />}
      <section aria-labelledby="gate-rules-title">
        <h2 id="gate-rules-title">Rules</h2>
        <ul class="rules">
          {gate.rules.map((r) => (
            <li key={r.id} class="rule" data-testid="gate-rule" data-rule-name={r.name}>
              {editing === r.id ? (
                <RuleEditor
                  gateId={gate.id}
                  rule={r}
                  onDone={() => {
                    setEditing(null);
                    void q.refetch();
                  }}
                />
              ) : (
                <>
                  <div class="rule-head">
                    <h3>{r.name}</h3>
                    <span class="muted small">{r.type === 'MONITOR' ? 'Monitor' : r.type === 'METRIC' ? 'Metric' : 'Faulty deployment detection'}</span>
                    {r.dryRun && <span class="badge badge-dry">dry run</span>}
                    {writer && (
                      <span class="page-actions">
                        <button type="button" class="small secondary" onClick={() => setEditing(r.id)} aria-label={`Edit rule ${r.name}`}>
                          Edit
                        </button>
                        {/* Two steps, as for the gate: one stray click must not weaken a gate. */}
                        {deletingRule === r.id ? (
                          <>
                            <button type="button" class="small danger" onClick={() => remove('deleteRule', r.id)} aria-label={`Delete rule ${r.name} for good`}>
                              Delete for good
                            </button>
                            <button type="button" class="small secondary" onClick={() => setDeletingRule(null)} aria-label={`Keep rule ${r.name}`}>
                              Keep it
                            </button>
                          </>
                        ) : (
                          <button type="button" class="small danger" onClick={() => setDeletingRule(r.id)} aria-label={`Delete rule ${r.name}`}>
                            Delete
                          </button>
                        )}
                      </span>
                    )}
                  </div>
                  <p class="small muted" data-testid="gate-rule-options">
                    {ruleSummary(r.options)}
                  </p>
                </>
              )}
            </li>
          ))}
          {gate.rules.length === 0 && <li class="muted">No rules: every evaluation passes.</li>}
        </ul>
        {writer &&
          (editing === 'new' ? (
            <RuleEditor
              gateId={gate.id}
              rule={null}
              onDone={() => {
                setEditing(null);
                void q.refetch();
              }}
            />
          ) : (
            <button type="button" class="secondary" onClick={() => setEditing('new')}>
              Add a rule
            </button>
          ))}
      </section>
      <section aria-labelledby="gate-evals-title">
        <h2 id="gate-evals-title">Last evaluations</h2>
        <ul class="plain">
          {(q.data?.evaluations.edges ?? []).map(({ node: e }) => (
            <li key={e.id}>
              <a href={`/evaluations/${e.id}`}>
                <Time at={e.startedAt} />
              </a>{' '}
              {e.version ?? ''} <EvaluationStatusCell e={e} />
            </li>
          ))}
          {q.data?.evaluations.edges.length === 0 && <li class="muted">Not evaluated yet.</li>}
        </ul>
      </section>
      <GateBacktests gateId={gate.id} who={who} />
    </Page>
  );
}
