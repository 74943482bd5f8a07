import { ApiError, gql } from './api.ts';

/** The signed-in key as the API describes it; scopes null when the API cannot say (then the server decides each action). */
export interface Viewer {
  name: string;
  scopes: string[] | null;
  envs: string[] | null;
}

/** Checks a key with the cheapest authenticated query; throws ApiError (UNAUTHENTICATED, NETWORK…). */
export async function viewer(key: string): Promise<Viewer> {
  try {
    const d = await gql<{ viewer: Viewer }>('query Viewer { viewer { name scopes envs } }', undefined, key);
    return d.viewer;
  } catch (err) {
    // A server without Query.viewer: the key is good if a trivial query is accepted.
    if (!(err instanceof ApiError) || err.code !== 'GRAPHQL_VALIDATION_FAILED') throw err;
    await gql('query SignIn { __typename }', undefined, key);
    return { name: 'signed in', scopes: null, envs: null };
  }
}

/** Whether the key may do what needs one of these scopes (ADMIN may do everything). */
export function can(who: Viewer, ...scopes: string[]): boolean {
  return who.scopes === null || who.scopes.includes('ADMIN') || scopes.some((s) => who.scopes!.includes(s));
}
