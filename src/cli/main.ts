import { Command } from 'commander';
import { serve } from './serve.ts';

const program = new Command()
  .name('tollgate')
  .description('Self-hosted deployment gates: may version V of a service go further in an environment?')
  .showHelpAfterError();

program
  .command('serve')
  .description('Run the Tollgate server (GraphQL over HTTP and WebSocket on one port)')
  .option('--port <port>', 'port to listen on (env PORT, default 4000)')
  .option('--host <host>', 'address to bind (env HOST, default 0.0.0.0)')
  .option('--db <path>', 'SQLite file (env TOLLGATE_DB, default ./data/tollgate.db)')
  .option('--public-url <url>', 'URL users reach Tollgate at, for links (env TOLLGATE_PUBLIC_URL)')
  .option('--prometheus-url <url>', 'Prometheus to query (env TOLLGATE_PROMETHEUS_URL)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (env TOLLGATE_LOG_LEVEL)')
  .action(serve);

await program.parseAsync(process.argv);
