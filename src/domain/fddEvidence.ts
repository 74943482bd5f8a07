// The evidence a faulty_deployment_detection rule records (src/engine/fddRule.ts), read into a
// typed shape for readers. Evidence is stored JSON written by whichever version of the rule ran
// the check, so every field is optional here: a missing or mistyped one reads as null (or an
// empty list), never as an error, and fields the rule adds later are simply not shown yet.

export interface FddArmView {
  requests: number | null;
  errors: number | null;
  errorRate: number | null;
}

export interface FddFaultyView {
  scope: 'resource' | 'primary_tag' | 'aggregate' | null;
  name: string;
  canary: FddArmView;
  baseline: FddArmView;
  eValue: number | null;
  threshold: number | null;
  /** Failed with the family's joint evidence, not past its own threshold alone. */
  jointly: boolean;
}

export interface FddNewErrorTypeView {
  errorType: string;
  count: number | null;
  resources: string[];
  sampleMessage: string | null;
  eValue: number | null;
  threshold: number | null;
  jointly: boolean;
}

export interface FddEvidenceView {
  version: string | null;
  baseline: 'concurrent' | 'lookback' | null;
  baselineVersions: string[];
  tests: number | null;
  alpha: number | null;
  canaryRequests: number | null;
  largestEValue: number | null;
  /** The weighted sum of every test's e-value, scaled so that the family fails at 1 / alpha. */
  familyEValue: number | null;
  clustering: {
    resources: number | null;
    aggregate: number | null;
    spells: number | null;
    baselineDispersion: number | null;
    /** Placebo instances, when spans named their instance and the hour before had them. */
    placebo: { instances: number; degreesOfFreedom: number; factor: number } | null;
  } | null;
  faultyResources: FddFaultyView[];
  newErrorTypes: FddNewErrorTypeView[];
  insufficientData: boolean;
  requestsNeeded: number | null;
  sourceErrors: number | null;
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | null => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const strings = (v: unknown): string[] => list(v).filter((x): x is string => typeof x === 'string');

function arm(v: unknown): FddArmView {
  const a = obj(v) ?? {};
  return { requests: num(a.requests), errors: num(a.errors), errorRate: num(a.errorRate) };
}

function placeboOf(p: Json | null): { instances: number; degreesOfFreedom: number; factor: number } | null {
  const instances = num(p?.instances);
  const degreesOfFreedom = num(p?.degreesOfFreedom);
  const factor = num(p?.factor);
  return instances === null || degreesOfFreedom === null || factor === null ? null : { instances, degreesOfFreedom, factor };
}

const SCOPES = new Set(['resource', 'primary_tag', 'aggregate']);

/** The typed view of an FDD rule's evidence; null when there is none (not yet checked, or not an object). */
export function readFddEvidence(evidence: unknown): FddEvidenceView | null {
  const e = obj(evidence);
  if (!e) return null;
  const clustering = obj(e.clustering);
  const baseline = str(e.baseline);
  return {
    version: str(e.version),
    baseline: baseline === 'concurrent' || baseline === 'lookback' ? baseline : null,
    baselineVersions: strings(e.baselineVersions),
    tests: num(e.tests),
    alpha: num(e.alpha),
    canaryRequests: num(e.canaryRequests),
    largestEValue: num(e.largestEValue),
    familyEValue: num(e.familyEValue),
    clustering: clustering
      ? {
          resources: num(clustering.resources),
          aggregate: num(clustering.aggregate),
          spells: num(clustering.spells),
          baselineDispersion: num(clustering.baselineDispersion),
          placebo: placeboOf(obj(clustering.placebo)),
        }
      : null,
    faultyResources: list(e.faultyResources).flatMap((v) => {
      const f = obj(v);
      const name = str(f?.name);
      if (!f || name === null) return [];
      const scope = str(f.scope);
      return [
        {
          scope: scope && SCOPES.has(scope) ? (scope as FddFaultyView['scope']) : null,
          name,
          canary: arm(f.canary),
          baseline: arm(f.baseline),
          eValue: num(f.eValue),
          threshold: num(f.threshold),
          jointly: f.jointly === true,
        },
      ];
    }),
    newErrorTypes: list(e.newErrorTypes).flatMap((v) => {
      const t = obj(v);
      const errorType = str(t?.errorType);
      if (!t || errorType === null) return [];
      return [
        {
          errorType,
          count: num(t.count),
          resources: strings(t.resources),
          sampleMessage: str(t.sampleMessage),
          eValue: num(t.eValue),
          threshold: num(t.threshold),
          jointly: t.jointly === true,
        },
      ];
    }),
    insufficientData: e.insufficientData === true,
    requestsNeeded: num(e.requestsNeeded),
    sourceErrors: num(e.sourceErrors),
  };
}
