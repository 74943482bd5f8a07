import { Page } from '../components.tsx';
export function MonitorsPage() {
  return <Page title="Monitors">Coming.</Page>;
}
export function MonitorPage(_: { id: string }) {
  return <Page title="Monitor">Coming.</Page>;
}
