import type { MonitorSource } from './monitorSource.ts';

/**
 * External monitors: their states are pushed to Tollgate, by reportMonitorState (GraphQL and
 * REST) and by the Alertmanager receiver (alertmanager.ts, which creates a monitor per
 * alertname). There is nothing to read, so nothing to evaluate.
 */
export const externalSource: MonitorSource = {};
