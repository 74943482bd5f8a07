import { Page } from '../components.tsx';
import type { Viewer } from '../viewer.ts';
export function GatesPage(_: { who: Viewer }) {
  return <Page title="Gates">Coming.</Page>;
}
export function GatePage(_: { id: string; who: Viewer }) {
  return <Page title="Gate">Coming.</Page>;
}
