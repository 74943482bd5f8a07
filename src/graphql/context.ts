import type { Deps } from '../domain/deps.ts';
import type { Principal } from '../domain/principal.ts';

/** One per operation, on both transports. Loaders hang off it (Pothos caches per context). */
export interface Context {
  deps: Deps;
  principal: Principal;
}
