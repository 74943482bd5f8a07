/**
 * The times at which rules want to be checked, earliest first, for one process-wide timer.
 * A binary heap with lazy deletion: rescheduling a key pushes a new entry and leaves the
 * old one to be skipped when it surfaces.
 */
export class TimerQueue {
  private heap: Array<{ at: number; key: string }> = [];
  private due = new Map<string, number>();

  get size(): number {
    return this.due.size;
  }

  set(key: string, at: number): void {
    this.due.set(key, at);
    this.heap.push({ at, key });
    this.up(this.heap.length - 1);
  }

  delete(key: string): void {
    this.due.delete(key);
  }

  /** The earliest live time, dropping stale entries on the way. */
  peek(): number | undefined {
    while (this.heap.length > 0) {
      const top = this.heap[0]!;
      if (this.due.get(top.key) === top.at) return top.at;
      this.pop();
    }
    return undefined;
  }

  /** Removes and returns every key due at or before `now`. */
  takeDue(now: number): string[] {
    const keys: string[] = [];
    for (let at = this.peek(); at !== undefined && at <= now; at = this.peek()) {
      const { key } = this.pop()!;
      this.due.delete(key);
      keys.push(key);
    }
    return keys;
  }

  private pop(): { at: number; key: string } | undefined {
    const top = this.heap[0];
    const last = this.heap.pop();
    if (this.heap.length > 0 && last) {
      this.heap[0] = last;
      this.down(0);
    }
    return top;
  }

  private up(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.at <= h[i]!.at) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l]!.at < h[m]!.at) m = l;
      if (r < h.length && h[r]!.at < h[m]!.at) m = r;
      if (m === i) return;
      [h[m], h[i]] = [h[i]!, h[m]!];
      i = m;
    }
  }
}
