// Debian's Chromium driven by playwright-core (no browser download): for the browser tests, the
// explorer benchmark and the screenshots. Tests skip without it unless TOLLGATE_REQUIRE_INTEGRATION=1.
import { type BrowserContext, type BrowserContextOptions, chromium, type Page } from 'playwright-core';

export const CHROMIUM = process.env.TOLLGATE_CHROMIUM ?? '/usr/bin/chromium';

/** Nothing reaches out by itself: no updates, no sync, no QUIC probes. */
const ARGS = ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export interface Chromium {
  /** A fresh context (its own storage: sessionStorage, localStorage) and a page in it. */
  page(options?: BrowserContextOptions): Promise<{ context: BrowserContext; page: Page }>;
  close(): Promise<void>;
}

/** Headless Chromium; playwright gives each launch a fresh temporary profile directory. */
export async function launchChromium(): Promise<Chromium> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, chromiumSandbox: false, args: ARGS });
  return {
    async page(options = {}) {
      const context = await browser.newContext(options);
      return { context, page: await context.newPage() };
    },
    close: () => browser.close(),
  };
}

/**
 * Fails every request that leaves localhost and records it: the page must work air-gapped.
 * Returns the list of URLs that were attempted (it should stay empty).
 */
export async function offline(context: BrowserContext): Promise<string[]> {
  const attempted: string[] = [];
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === 'data:' || url.protocol === 'blob:' || url.hostname === 'localhost' || url.hostname === '127.0.0.1') return route.continue();
    attempted.push(url.href);
    return route.abort('internetdisconnected');
  });
  return attempted;
}

/** Console errors and uncaught exceptions of a page, CSP violations among them. */
export function collectErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  page.on('pageerror', (error) => errors.push(String(error)));
  return errors;
}

/** A fresh tab (its own storage) opened at `url` and signed in with `key`; its uncaught errors are printed. */
export async function signedInPage(chromium: Chromium, url: string, key: string): Promise<Page> {
  const { page } = await chromium.page();
  page.on('pageerror', (err) => console.error('page error:', err));
  await page.goto(url);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  return page;
}
