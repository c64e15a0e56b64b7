/**
 * Wait on a condition instead of sleeping: poll until it holds and assert that it did
 * within a deadline, printing how long it took.
 */
import type { Test } from 'tap'

/** Poll `check` every `everyMs` until it holds; the ms it took, or a failed assertion after `deadlineMs`. */
export async function within (t: Test, what: string, check: () => Promise<boolean>, deadlineMs: number, everyMs = 10): Promise<number> {
  const start = performance.now()
  while (performance.now() - start < deadlineMs) {
    if (await check()) {
      const ms = performance.now() - start
      t.pass(`${what} (${ms.toFixed(0)} ms)`)
      return ms
    }
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
  t.fail(`${what}: not within ${deadlineMs} ms`)
  return Number.NaN
}
