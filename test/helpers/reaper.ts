/**
 * Servers a test spawns die with the test process. Teardowns stop them on a normal end, but a
 * test that throws outside a subtest, or that tap stops at its timeout (SIGTERM), skipped
 * them and left redis-servers and sentinels running on the machine (CI's too), each holding
 * a port and memory. On 'exit' (which a thrown error and SIGTERM/SIGINT below both reach)
 * every child still running is SIGKILLed. A SIGKILL of the test process itself cannot be
 * caught; nothing here pretends otherwise.
 */
import type { ChildProcess } from 'node:child_process'

const children = new Set<ChildProcess>()
let installed = false

function killAll (): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try { child.kill('SIGKILL') } catch { /* already gone */ }
    }
  }
  children.clear()
}

function install (): void {
  installed = true
  process.once('exit', killAll)
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    // A listener replaces the default (end the process), so the process must still end.
    // Under tap, signal-exit listens too and re-raises the signal only when it is the sole
    // listener: this one is gone after it ran (once), so raising the signal again hands the
    // ending to signal-exit. Alone, end it with SIGKILL: neither process.exit() (under tsx's
    // loader thread it ran the 'exit' handlers, then hung) nor a re-raised signal ended it
    // (seen on Node 20.20).
    process.once(signal, () => {
      killAll()
      process.kill(process.pid, process.listenerCount(signal) > 0 ? signal : 'SIGKILL')
    })
  }
}

/** Kill `child` when this process ends, if it is still running then. */
export function reapOnExit (child: ChildProcess): ChildProcess {
  if (!installed) install()
  children.add(child)
  child.once('exit', () => { children.delete(child) })
  return child
}
