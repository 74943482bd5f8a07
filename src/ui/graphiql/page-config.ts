/**
 * What the server tells the GraphiQL page (src/server/graphiql.ts writes it into a JSON data
 * block, which the Content-Security-Policy does not treat as script).
 */
export interface GraphiqlPageConfig {
  /** This response's style nonce: Monaco and Radix insert <style> elements, which CSP allows only with it. */
  styleNonce: string;
  /** Monaco's web workers by label (editor, json, graphql), served from Tollgate's own hashed assets. */
  workers: Record<string, string>;
  /** false in production: the server refuses introspection, so GraphiQL gets no schema to ask for. */
  introspection: boolean;
}

export const pageConfig: GraphiqlPageConfig = JSON.parse(document.getElementById('tollgate-graphiql')?.textContent ?? '{}');
