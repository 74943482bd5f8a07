import { type Facets, evaluationFacets } from '../domain/insights.ts';
import { builder } from './builder.ts';
import { EvaluationFilter, toFilter } from './evaluation.ts';

const READ = { 'gates:read': true, 'evaluations:write': true } as const;

const FacetValue = builder.objectRef<{ value: string; count: number; label?: string }>('FacetValue').implement({
  fields: (t) => ({
    value: t.exposeString('value', { description: 'As EvaluationFilter takes it back (enum names for status and rule type, "true"/"false" for dryRun, the id for a gate).' }),
    count: t.exposeInt('count', { description: 'Evaluations it selects, with every other condition of the filter applied.' }),
    label: t.exposeString('label', { nullable: true, description: 'For a gate: service/env/identifier.' }),
  }),
});

const EvaluationFacets = builder.objectRef<Facets>('EvaluationFacets').implement({
  description:
    "Each facet's values over the filtered range, most evaluations first. A facet's counts leave out its own selection (choosing one service still lists the others) and count only the caller's environments.",
  fields: (t) => ({
    startedAfter: t.expose('startedAfter', { type: 'DateTime', description: 'The range counted (default: the 7 days before startedBefore).' }),
    startedBefore: t.expose('startedBefore', { type: 'DateTime', description: 'Default: now.' }),
    service: t.field({ type: [FacetValue], resolve: (f) => f.values.service }),
    env: t.field({ type: [FacetValue], resolve: (f) => f.values.env }),
    identifier: t.field({ type: [FacetValue], resolve: (f) => f.values.identifier }),
    version: t.field({ type: [FacetValue], resolve: (f) => f.values.version }),
    status: t.field({ type: [FacetValue], description: 'The real status (dry run ignored).', resolve: (f) => f.values.status }),
    dryRun: t.field({ type: [FacetValue], resolve: (f) => f.values.dryRun }),
    gate: t.field({ type: [FacetValue], description: 'Stored gates (just-in-time evaluations have none).', resolve: (f) => f.values.gate }),
    ruleType: t.field({ type: [FacetValue], resolve: (f) => f.values.ruleType }),
    ruleName: t.field({ type: [FacetValue], resolve: (f) => f.values.ruleName }),
  }),
});

builder.queryField('evaluationFacets', (t) =>
  t.field({
    type: EvaluationFacets,
    authScopes: READ,
    description: 'The values the evaluation filters offer, with counts. The range is at most 30 days.',
    args: {
      filter: t.arg({ type: EvaluationFilter }),
      top: t.arg.int({ defaultValue: 20, description: 'Values per facet, 1–100.' }),
    },
    resolve: (_root, args, { deps, principal }) => evaluationFacets(deps, principal, toFilter(args.filter), args.top ?? 20),
  }),
);
