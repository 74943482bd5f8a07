import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';

// Each command imports its module when it runs: `tollgate evaluate` in a pipeline then starts
// without loading the server (GraphQL schema, engine, database drivers), seconds of start-up.
const applyModule = async () => await import('./apply.ts');
const keysModule = async () => await import('./keys.ts');

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command()
  .name('tollgate')
  .description('Self-hosted deployment gates: may version V of a service go further in an environment?')
  .version(version, '-V, --version', "print Tollgate's version")
  // Program options only before the command: `evaluate --version 1.2` is the deployed version.
  .enablePositionalOptions()
  .showHelpAfterError();

/**
 * commander reports a missing required option before an unknown one, so a mistyped
 * `--servce` read as "--service not specified". These options are checked once commander
 * has refused unknown flags (it does before any action runs), with commander's own message.
 */
const mandatory = new Set<Option>();
function required(flags: string, description: string, parse?: (value: string, previous: string[]) => string[]): Option {
  const option = new Option(flags, `${description} (required)`);
  if (parse) option.argParser(parse);
  mandatory.add(option);
  return option;
}
program.hook('preAction', (_program, action) => {
  for (const option of action.options) {
    if (mandatory.has(option) && action.getOptionValue(option.attributeName()) === undefined) {
      action.error(`error: required option '${option.flags}' not specified`, { code: 'commander.missingMandatoryOptionValue' });
    }
  }
});

program
  .command('serve')
  .description('Run the Tollgate server (GraphQL over HTTP and WebSocket on one port)')
  .option('--port <port>', 'port to listen on (env PORT, default 4000)')
  .option('--host <host>', 'address to bind (env HOST, default 0.0.0.0)')
  .option('--db <path>', 'SQLite file (env TOLLGATE_DB, default ./data/tollgate.db)')
  .option('--public-url <url>', 'URL users reach Tollgate at, for links (env TOLLGATE_PUBLIC_URL)')
  .option('--prometheus-url <url>', 'Prometheus to query (env TOLLGATE_PROMETHEUS_URL)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (env TOLLGATE_LOG_LEVEL)')
  .option('--tls-cert <file>', 'serve HTTPS/WSS with this PEM certificate chain (env TOLLGATE_TLS_CERT; SIGHUP reloads)')
  .option('--tls-key <file>', "the certificate's PEM private key (env TOLLGATE_TLS_KEY)")
  .action(async (flags) => (await import('./serve.ts')).serve(flags));

program
  .command('evaluate')
  .description('Ask whether a version may go further: trigger an evaluation and wait for its verdict (exit 0 pass, 1 fail)')
  .addOption(required('--service <service>', 'service being deployed'))
  .addOption(required('--env <env>', 'environment'))
  .option('--identifier <identifier>', 'gate identifier (default: default)')
  .option('--version <version>', 'version being deployed (required by faulty-deployment-detection rules)')
  .option('--primary-tag <tag>', 'limit the analysis to one primary tag, e.g. region:us-east-1')
  .option('--apm-primary-tag <tag>', 'datadog-ci spelling of --primary-tag')
  .option('--config <file>', 'JSON file of just-in-time rules ({"rules": [...]}, datadog-ci format)')
  .option('--timeout <seconds>', 'give up after this long', '10800')
  .option('--fail-on-error', 'fail (exit 1) on timeouts and server errors instead of passing')
  .option('--url <url>', 'Tollgate URL (env TOLLGATE_URL)', process.env.TOLLGATE_URL ?? 'http://localhost:4000')
  .option('--api-key <key>', 'API key with evaluations:write (env TOLLGATE_API_KEY or DD_API_KEY)')
  .option('--json', 'print the final result as JSON on stdout (progress goes to stderr)')
  .option('--no-watch', 'poll instead of following the evaluation over WebSocket')
  .action(async (flags) => {
    process.exitCode = await (await import('./evaluate.ts')).evaluate({ ...flags, primaryTag: flags.primaryTag ?? flags.apmPrimaryTag });
  });

program
  .command('override <evaluation-id>')
  .description("Replace an evaluation's verdict with yours (callers are told it; the real status and evidence stay), giving a reason")
  .addOption(required('--verdict <verdict>', 'pass or fail'))
  .addOption(required('--reason <reason>', 'why, 1–1000 characters (shown with the evaluation and in the audit log)'))
  .option('--url <url>', 'Tollgate URL (env TOLLGATE_URL)', process.env.TOLLGATE_URL ?? 'http://localhost:4000')
  .option('--api-key <key>', 'API key with evaluations:override (env TOLLGATE_API_KEY)')
  .action(async (id: string, flags) => {
    process.exitCode = await (await import('./override.ts')).override(id, flags);
  });

const keys = program.command('keys').description('Manage API keys directly on the server’s database (DATABASE_URL=postgres://…, or the SQLite file: TOLLGATE_DB or --db)');
const collect = (value: string, previous: string[] = []) => [...previous, value];
keys
  .command('create')
  .description('Create a key and print its secret (once)')
  .addOption(required('--name <name>', 'what the key is for'))
  .addOption(
    required('--scope <scope>', 'gates:read, gates:write, evaluations:write, evaluations:override, monitors:write, ingest or admin; GATES_READ… works too (repeatable)', collect),
  )
  .option('--env <env>', 'limit the key to this environment (repeatable)', collect)
  .option('--db <path>', 'SQLite file (default TOLLGATE_DB or ./data/tollgate.db)')
  .action(async (flags) => (await keysModule()).keysCreate(flags));
keys
  .command('list')
  .description('List keys (never their secrets)')
  .option('--db <path>', 'SQLite file')
  .action(async (flags) => (await keysModule()).keysList(flags));
keys
  .command('revoke <id>')
  .description('Revoke a key at once')
  .option('--db <path>', 'SQLite file')
  .action(async (id: string, flags) => (await keysModule()).keysRevoke(id, flags));

/** --url and --api-key, for the commands that talk to a running Tollgate. */
const serverOptions = (command: Command, scope: string) =>
  command
    .option('--url <url>', 'Tollgate URL (env TOLLGATE_URL)', process.env.TOLLGATE_URL ?? 'http://localhost:4000')
    .option('--api-key <key>', `API key with ${scope} (env TOLLGATE_API_KEY)`);

serverOptions(
  program
    .command('apply')
    .description('Make the server’s gates match a YAML file (idempotent; rules matched by name)')
    .addOption(required('-f, --file <gates.yaml>', 'the gates file'))
    .option('--dry-run', 'print the changes without making them')
    .option('--prune', 'also delete gates the file does not list'),
  'gates:write',
).action(async (flags) => {
  process.exitCode = await (await applyModule()).apply(flags);
});

serverOptions(program.command('export').description('Print the server’s gates as a YAML file for apply'), 'gates:read').action(async (flags) => {
  process.exitCode = await (await applyModule()).exportGates(flags);
});

program
  .command('demo')
  .description('Watch a gate fail a bad canary live, then pass a clean one (starts its own Tollgate unless --url)')
  .option('--url <url>', 'use this Tollgate instead of a throwaway one')
  .option('--api-key <key>', 'API key for --url (admin, or gates:write + monitors:write + ingest + evaluations:write)')
  .option('--window <seconds>', 'length of the rules’ windows', '45')
  .action(async (flags) => {
    process.exitCode = await (await import('./demo.ts')).demo(flags);
  });

program
  .command('migrate')
  .description('Apply pending database migrations and exit; with --from and --to, copy a SQLite database into an empty PostgreSQL one')
  .option('--db <path>', 'SQLite file')
  .option('--from <sqlite:path>', 'the SQLite database to copy, as sqlite:<path> (stop its server first)')
  .option('--to <url>', 'the empty PostgreSQL database to copy it into, postgres://…')
  .action(async (flags: { db?: string; from?: string; to?: string }) => {
    if (flags.from === undefined && flags.to === undefined) return (await keysModule()).migrate(flags);
    if (flags.db !== undefined) {
      console.error('tollgate: migrate --db applies migrations; --from and --to copy a database: use one or the other');
      process.exitCode = 2;
      return;
    }
    process.exitCode = await (await import('./migrate.ts')).migrateStore(flags);
  });

await program.parseAsync(process.argv);
