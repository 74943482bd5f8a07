// Import rules for src/, run by `npm run lint:deps` (part of `npm test`): imports point down
// the layers, and no modules import each other in a loop.
//
// Layers, top to bottom. A module may import its own layer and any layer below it (skipping
// is fine: GraphQL types rows from db/), never one above:
//
//   cli      commands (serve, keys, apply, evaluate, demo)
//   server   HTTP, WebSocket, REST, hooks, ingestion; builds Deps and wires everything (app.ts)
//   graphql  the schema: thin resolvers over domain functions
//   engine   drives evaluations: scheduling, leases, retries, one runner per rule type
//   sources  data from outside: monitor sources, Prometheus, Alertmanager, OTLP, the APM writer
//            (below the engine: a rule runner may read a source; a source never drives a rule)
//   domain   validation, authorization, and the operations every transport calls
//   db       tables and statements
//   shared   src/config.ts and src/log.ts: any layer imports them, they import none of ours
//
// What a lower layer needs from a higher one is handed down, never imported: the domain plans
// rule windows with the engine's runners through `Deps.planWindow`, and the engine learns of
// new evaluations from the event bus. src/ui is a separate program (the browser's): it shares
// no module with the server.

const LAYERS = [
  ['cli', '^src/cli/'],
  ['server', '^src/server/'],
  ['graphql', '^src/graphql/'],
  ['engine', '^src/engine/'],
  ['sources', '^src/sources/'],
  ['domain', '^src/domain/'],
  ['db', '^src/db/'],
  ['shared', '^src/(config|log)[.]ts$'],
];

const upward = LAYERS.slice(1).map(([name, path], i) => {
  const above = LAYERS.slice(0, i + 1);
  return {
    name: `${name}-imports-up`,
    severity: 'error',
    comment: `${name} may not import ${above.map(([n]) => n).join(', ')}: hand what it needs down (a Deps field, an event) or move the code to the layer that owns it.`,
    from: { path },
    to: { path: above.map(([, p]) => p) },
  };
});

module.exports = {
  forbidden: [
    ...upward,
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'Modules importing each other, directly or around a loop: move what both need to a module below them.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'outside-the-layers',
      severity: 'error',
      comment: 'Every module of src/ belongs to a layer: put it in one, or add its directory to LAYERS in .dependency-cruiser.cjs.',
      from: { path: '^src/', pathNot: [...LAYERS.map(([, p]) => p), '^src/ui/'] },
      to: {},
    },
    {
      name: 'ui-is-its-own-program',
      severity: 'error',
      comment: 'src/ui runs in the browser: it shares no module with the server.',
      from: { path: '^src/ui/' },
      to: { path: '^src/', pathNot: '^src/ui/' },
    },
    {
      name: 'nothing-imports-ui',
      severity: 'error',
      comment: 'The server builds src/ui with esbuild from its files; importing it would load browser code into the server.',
      from: { path: '^src/', pathNot: '^src/ui/' },
      to: { path: '^src/ui/' },
    },
    {
      name: 'no-test-code',
      severity: 'error',
      comment: 'Code under src/ never imports the tests.',
      from: { path: '^src/' },
      to: { path: '^test/' },
    },
    {
      name: 'resolvable',
      severity: 'error',
      comment: 'An import the cruiser cannot resolve escapes every rule above: fix the path (or the config).',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    // Type-only imports are dependencies too: a layer must not know a higher layer's types.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    // Packages that only say where their code is in `exports` (uuid, graphql-ws/use/ws).
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
