import { defineConfig } from 'drizzle-kit';

// The PostgreSQL store (DATABASE_URL=postgres://…): the same tables as drizzle.sqlite.config.ts, their own migrations.
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/pgSchema.ts',
  out: './drizzle/pg',
});
