import { apmSource } from './apmSource.ts';
import { externalSource } from './externalSource.ts';
import type { MonitorSources } from './monitorSource.ts';
import type { PrometheusClient } from './prometheus.ts';
import { prometheusSource } from './prometheusSource.ts';

/** One source per monitor type (MONITOR_TYPES in db/schema.ts): a type without one does not compile. */
export function monitorSources(prometheus: PrometheusClient | null): MonitorSources {
  return {
    external: externalSource,
    apm: apmSource,
    prometheus: prometheusSource(prometheus),
  };
}
