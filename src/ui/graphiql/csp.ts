// Imported first: from here on every <style> element the page creates carries this response's
// nonce, so Monaco's theme and Radix's scroll lock styles pass `style-src 'self' 'nonce-…'`
// without allowing inline style to anything else (markup injected by a schema description, say).
import { pageConfig } from './page-config.ts';

const createElement = Document.prototype.createElement;
Document.prototype.createElement = function (this: Document, tagName: string, options?: ElementCreationOptions) {
  const element = createElement.call(this, tagName, options);
  if (element instanceof HTMLStyleElement && pageConfig.styleNonce) element.nonce = pageConfig.styleNonce;
  return element;
} as typeof Document.prototype.createElement;

// Monaco's workers, bundled by the server as classic scripts under /assets/graphiql/: same
// origin, so `worker-src 'self'` suffices (no blob: URLs, no CDN).
(globalThis as { MonacoEnvironment?: unknown }).MonacoEnvironment = {
  getWorker(_workerId: string, label: string): Worker {
    const url = pageConfig.workers[label] ?? pageConfig.workers.editor;
    if (!url) throw new Error(`no worker for ${label}`);
    return new Worker(url, { name: label });
  },
};
