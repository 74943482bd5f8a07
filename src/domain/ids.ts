import { v7 as uuidv7, validate } from 'uuid';
import { badInput } from './errors.ts';

/** Time-ordered UUIDs: ordering by id is ordering by creation, which keyset paging relies on. */
export const newId = (): string => uuidv7();

export function assertUuid(value: string, field: string): string {
  if (!validate(value)) throw badInput(field, `"${value}" is not a valid UUID`);
  return value.toLowerCase();
}
