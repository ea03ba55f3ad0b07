/**
 * Says the changes of a yes/no condition at most once per `everyMs`. A
 * condition at the edge of its threshold (a backup acking at about the
 * deadline) can change every few hundred ms; a line per change floods the log
 * of an edge under load. The first change is said at once; changes within the
 * next `everyMs` are counted, and when that time is up the state they left is
 * said, with how many changes went unsaid.
 */
export class FlapLog {
  private said: boolean;
  private now: boolean;
  private saidAt = Number.NEGATIVE_INFINITY;
  private unsaid = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly say: (state: boolean, unsaid: number) => void;
  private readonly everyMs: number;

  constructor(initial: boolean, say: (state: boolean, unsaid: number) => void, everyMs = 10_000) {
    this.said = initial;
    this.now = initial;
    this.say = say;
    this.everyMs = everyMs;
  }

  set(state: boolean): void {
    if (state === this.now) return;
    this.now = state;
    if (this.timer !== null) {
      this.unsaid++;
      return;
    }
    const since = performance.now() - this.saidAt;
    if (since >= this.everyMs) {
      this.sayNow();
      return;
    }
    this.unsaid++;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.sayNow(); // the state now, even if back where the last line left it (it flapped meanwhile)
    }, this.everyMs - since);
    this.timer.unref();
  }

  /** Starts again from `state`, unsaid, with no line pending (the condition's owner began anew and said so). */
  reset(state: boolean): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.unsaid = 0;
    this.said = state;
    this.now = state;
  }

  private sayNow(): void {
    // Changes counted since the last line, but for the one this line says.
    const unsaid = Math.max(0, this.unsaid - (this.now !== this.said ? 1 : 0));
    this.said = this.now;
    this.saidAt = performance.now();
    this.unsaid = 0;
    this.say(this.now, unsaid);
  }
}
