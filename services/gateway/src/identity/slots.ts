/**
 * A counting semaphore: at most `size` tasks run at once, the rest wait in arrival order.
 * Password hashing uses it so that a burst of logins neither holds more memory than
 * `size` hashes (19 MiB each) nor fills libuv's thread pool, which DNS lookups and file
 * reads share with it.
 */
export class Slots {
  readonly size: number
  #free: number
  readonly #waiting: Array<() => void> = []

  constructor (size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError('size must be a positive integer')
    this.size = size
    this.#free = size
  }

  /** Tasks running now. */
  get active (): number { return this.size - this.#free }

  /** Tasks waiting for a slot. */
  get queued (): number { return this.#waiting.length }

  async run<T> (task: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--
    else await new Promise<void>(resolve => { this.#waiting.push(resolve) })
    try {
      return await task()
    } finally {
      // Hand the slot straight to the next waiter, so a newcomer cannot overtake it.
      const next = this.#waiting.shift()
      if (next !== undefined) next()
      else this.#free++
    }
  }
}
