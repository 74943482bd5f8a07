import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { printSchema } from 'graphql';
import { schema } from './index.ts';

export const schemaFile = join(dirname(fileURLToPath(import.meta.url)), '../../schema/schema.graphql');

export const printedSchema = (): string => `${printSchema(schema)}\n`;

// `npm run schema:print` writes the SDL; `npm run schema:check` fails when it is stale.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const printed = printedSchema();
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(schemaFile, 'utf8');
    } catch {}
    if (current !== printed) {
      console.error('schema/schema.graphql is out of date: run npm run schema:print');
      process.exit(1);
    }
    console.log('schema/schema.graphql is current');
  } else {
    writeFileSync(schemaFile, printed);
    console.log(`wrote ${schemaFile}`);
  }
}
