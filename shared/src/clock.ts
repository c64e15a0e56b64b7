/** Time is injected so that TTL logic is tested by moving a clock, never by sleeping. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now (): number
}

export const systemClock: Clock = Object.freeze({ now: () => Date.now() })

/** A clock tests move by hand. */
export class ManualClock implements Clock {
  #now: number
  constructor (start = Date.UTC(2026, 0, 1)) { this.#now = start }
  now (): number { return this.#now }
  advance (ms: number): void { this.#now += ms }
  set (ms: number): void { this.#now = ms }
}
