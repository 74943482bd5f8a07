/**
 * The checks due to run, in lanes (one per rule type), each in arrival order. The engine takes
 * them a lane at a time in turn, passing over a lane whose network checks are all busy: a slow
 * webhook endpoint then holds up webhook rules only, while monitor, FDD and metric rules go on.
 * A rule asked for twice before its turn is checked once.
 */
export class DueChecks {
  private readonly lanes = new Map<string, Set<string>>();
  private readonly laneOf = new Map<string, string>();
  /** Where the next round of `take` starts, so every lane gets its turn. */
  private turn = 0;

  get size(): number {
    return this.laneOf.size;
  }

  add(id: string, lane: string): void {
    if (this.laneOf.has(id)) return;
    this.laneOf.set(id, lane);
    let ids = this.lanes.get(lane);
    if (!ids) this.lanes.set(lane, (ids = new Set()));
    ids.add(id);
  }

  delete(id: string): void {
    const lane = this.laneOf.get(id);
    if (lane === undefined) return;
    this.laneOf.delete(id);
    this.lanes.get(lane)?.delete(id);
  }

  clear(): void {
    this.lanes.clear();
    this.laneOf.clear();
  }

  /** The next check of the next lane `open` lets through; the closed lanes keep theirs. */
  take(open: (lane: string) => boolean): string | undefined {
    const names = [...this.lanes.keys()];
    for (let i = 0; i < names.length; i++) {
      const at = (this.turn + i) % names.length;
      const ids = this.lanes.get(names[at]!)!;
      if (ids.size === 0 || !open(names[at]!)) continue;
      const id = ids.values().next().value as string;
      this.turn = at + 1;
      this.delete(id);
      return id;
    }
    return undefined;
  }

  /** Whether `take` would return a check now. */
  runnable(open: (lane: string) => boolean): boolean {
    for (const [lane, ids] of this.lanes) if (ids.size > 0 && open(lane)) return true;
    return false;
  }
}
