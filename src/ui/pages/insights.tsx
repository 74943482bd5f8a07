import { Page } from '../components.tsx';
export function InsightsPage() {
  return <Page title="Insights">Coming.</Page>;
}
