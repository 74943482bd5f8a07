import { gql } from './api.ts';

/** The signed-in key as the API describes it (Query.viewer). */
export interface Viewer {
  name: string;
  /** Every scope the key acts with (ADMIN grants all); null when the API could not be asked (offline). */
  scopes: string[] | null;
  envs: string[] | null;
}

/** Checks a key with the cheapest authenticated query; throws ApiError (UNAUTHENTICATED, NETWORK…). */
export async function viewer(key: string): Promise<Viewer> {
  const d = await gql<{ viewer: { name: string; envs: string[] | null; effectiveScopes: string[] } }>('query Viewer { viewer { name envs effectiveScopes } }', undefined, key);
  return { name: d.viewer.name, envs: d.viewer.envs, scopes: d.viewer.effectiveScopes };
}

/** Whether the key may do what needs one of these scopes; unknown scopes (offline) let the server decide. */
export function can(who: Viewer, ...scopes: string[]): boolean {
  return who.scopes === null || scopes.some((s) => who.scopes!.includes(s));
}
