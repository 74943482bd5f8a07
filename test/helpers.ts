// What the end-to-end suites share, by concern; tests may import the modules directly.
export * from './helpers/api.ts';
export * from './helpers/live.ts';
export * from './helpers/pg.ts';
export * from './helpers/server.ts';
export * from './helpers/tools.ts';
