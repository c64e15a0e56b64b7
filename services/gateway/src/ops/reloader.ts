/**
 * Reload a config file (USERS_FILE, CLIENTS_FILE, SIGNING_KEYS_FILE, ROUTES_FILE) while the
 * gateway runs: when it changes on disk, and when asked (`reload()`, on SIGHUP).
 *
 * Watching survives the way Kubernetes updates a mounted Secret or ConfigMap: the mount
 * holds `users.json -> ..data/users.json` and `..data -> ..2026_12_04_05_00_00.123`; an
 * update writes a new timestamped directory, points a `..data_tmp` link at it and renames
 * that over `..data` (atomic), then deletes the old directory. The file itself is never
 * written, so a watch on it (its inode) would see nothing, or die with the old directory.
 * So the *directories* are watched — the configured path's and the one its symlinks
 * resolve to — and every event, debounced, re-reads the path from scratch. A slow stat
 * poll backs the watch up on filesystems that send no events (NFS, some overlays).
 *
 * A new file is parsed and validated whole by the caller's `parse` before `apply` sees
 * it; anything it throws refuses the file: one error line, the metric
 * `latchkey_config_reload_total{file,result="failure"}`, and the previous contents stay
 * in force. Content identical to what is in force (an editor's touch, a kubelet resync,
 * a SIGHUP with nothing changed) is not applied again.
 */
import { createHash } from 'node:crypto'
import { type FSWatcher, watch } from 'node:fs'
import { readFile, realpath, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { ConfigError } from '#shared/errors.js'

/** Wait for the writes of one change to settle (an editor's write + rename, kubelet's link dance). */
export const RELOAD_DEBOUNCE_MS = 100
/** Fallback re-stat of the resolved file, for filesystems whose watches report nothing. */
export const RELOAD_POLL_MS = 5_000

export type ReloadResult = 'success' | 'failure'
export type ReloadOutcome = ReloadResult | 'unchanged'

/** `latchkey_config_reload_total` (ops/metrics.ts); `file` is the variable name, a bounded label. */
export interface ReloadCounter { inc (labels: { file: string, result: ReloadResult }): void }

export interface ReloaderLog {
  info (obj: object, msg: string): void
  error (obj: object, msg: string): void
}

export interface FileReloaderOptions<T> {
  /** The path as configured (may be, or pass through, symlinks). */
  readonly path: string
  /** What the file is to an operator, e.g. 'USERS_FILE': the metric's `file` label and the log's. */
  readonly name: string
  /** Parse and validate the whole text; throw (a ConfigError: one line, no content) to refuse it. */
  readonly parse: (text: string, path: string) => T | Promise<T>
  /** Put a parsed value in force. Called one at a time, never for the value `load()` returned. */
  readonly apply: (value: T) => void | Promise<void>
  readonly log: ReloaderLog
  readonly counter?: ReloadCounter
  readonly debounceMs?: number
  /** 0 disables the poll. */
  readonly pollMs?: number
  /** false: no directory watches, the poll alone (where watches cannot be had). Default true. */
  readonly watch?: boolean
}

function digest (text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('base64url')
}

function errnoCode (err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined
}

/** The error's message when it is ours to show (a ConfigError's one line); never a parser's excerpt of the file. */
function problem (err: unknown): string {
  return err instanceof ConfigError ? err.message : 'invalid content'
}

export class FileReloader<T> {
  readonly #opts: FileReloaderOptions<T>
  readonly #path: string
  readonly #debounceMs: number
  readonly #pollMs: number
  /** Digest of the text in force; undefined until the first load or reload. */
  #current: string | undefined
  #watchers = new Map<string, FSWatcher>()
  #timer: NodeJS.Timeout | undefined
  #poll: NodeJS.Timeout | undefined
  #statSignature: string | undefined
  #running: Promise<ReloadOutcome> | undefined
  #again = false
  #closed = false

  constructor (opts: FileReloaderOptions<T>) {
    this.#opts = opts
    this.#path = resolve(opts.path)
    this.#debounceMs = opts.debounceMs ?? RELOAD_DEBOUNCE_MS
    this.#pollMs = opts.pollMs ?? RELOAD_POLL_MS
  }

  get name (): string {
    return this.#opts.name
  }

  /** Read and parse the file as it is now (boot): throws as `parse` does, and records it as in force. */
  async load (): Promise<T> {
    const text = await this.#read()
    const value = await this.#opts.parse(text, this.#path)
    this.#current = digest(text)
    return value
  }

  /** Start watching. Without a prior `load()`, the first change found is applied whatever it is. */
  async start (): Promise<void> {
    if (this.#closed) return
    await this.#rewatch()
    this.#statSignature = await this.#signature()
    // A change between load() and the watch would otherwise go unseen; an unchanged file costs one read.
    if (this.#current !== undefined) this.#schedule()
    if (this.#pollMs > 0) {
      this.#poll = setInterval(() => { void this.#checkStat() }, this.#pollMs)
      this.#poll.unref()
    }
  }

  /**
   * Re-read the file now (SIGHUP, or after a debounced change). Resolves once the result is
   * in force or refused; concurrent calls share a run, and a call during a run runs once more after it.
   */
  async reload (): Promise<ReloadOutcome> {
    if (this.#running !== undefined) {
      this.#again = true
      return await this.#running
    }
    this.#running = this.#reloadLoop()
    try {
      return await this.#running
    } finally {
      this.#running = undefined
    }
  }

  close (): void {
    this.#closed = true
    clearTimeout(this.#timer)
    clearInterval(this.#poll)
    for (const w of this.#watchers.values()) w.close()
    this.#watchers.clear()
  }

  async #reloadLoop (): Promise<ReloadOutcome> {
    // What the callers waited for: the last run that changed something, if any did.
    let outcome: ReloadOutcome = 'unchanged'
    do {
      this.#again = false
      const once = await this.#reloadOnce()
      if (once !== 'unchanged') outcome = once
    } while (this.#again && !this.#closed)
    return outcome
  }

  async #reloadOnce (): Promise<ReloadOutcome> {
    const { name, log, counter } = this.#opts
    let outcome: ReloadOutcome
    try {
      const text = await this.#read()
      const hash = digest(text)
      if (hash === this.#current) {
        outcome = 'unchanged'
      } else {
        const value = await this.#opts.parse(text, this.#path)
        await this.#opts.apply(value)
        this.#current = hash
        outcome = 'success'
        log.info({ event: 'config_reloaded', file: name, path: this.#path }, `${name} reloaded`)
      }
    } catch (err) {
      outcome = 'failure'
      log.error({ event: 'config_reload_refused', file: name, path: this.#path }, `${name} not reloaded, the previous one stays in force: ${problem(err)}`)
    }
    if (outcome !== 'unchanged') counter?.inc({ file: name, result: outcome })
    // The swap may have moved the target to another directory: follow it.
    if (!this.#closed) {
      await this.#rewatch()
      this.#statSignature = await this.#signature()
    }
    return outcome
  }

  /** The file's text; a read error is a ConfigError naming the variable (one line for a boot failure or a refusal). */
  async #read (): Promise<string> {
    try {
      return await readFile(this.#path, 'utf8')
    } catch (err) {
      throw new ConfigError(this.#opts.name, `${this.#opts.path}: cannot be read (${errnoCode(err) ?? 'I/O error'})`)
    }
  }

  #schedule (): void {
    if (this.#closed) return
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => { void this.reload() }, this.#debounceMs)
    this.#timer.unref()
  }

  /** Watch the configured path's directory and the directory its symlinks resolve to. */
  async #rewatch (): Promise<void> {
    const dirs = new Set<string>()
    if (this.#opts.watch === false) return
    dirs.add(dirname(this.#path))
    try {
      dirs.add(dirname(await realpath(this.#path)))
    } catch {
      // Missing right now (mid-swap, or deleted): the configured directory is still watched.
    }
    for (const [dir, w] of this.#watchers) {
      if (!dirs.has(dir)) {
        w.close()
        this.#watchers.delete(dir)
      }
    }
    for (const dir of dirs) {
      if (this.#watchers.has(dir) || this.#closed) continue
      try {
        const w = watch(dir, { persistent: false }, () => { this.#schedule() })
        // A watched directory that disappears (kubelet deletes the old timestamped one) errors; the poll and the next rewatch cover it.
        w.on('error', () => { w.close(); this.#watchers.delete(dir) })
        this.#watchers.set(dir, w)
      } catch {
        // Not watchable (gone, or no inotify left): the poll still notices changes.
      }
    }
  }

  /** Identity and size of the file the path resolves to now; changes whenever its content is replaced. */
  async #signature (): Promise<string | undefined> {
    try {
      const s = await stat(this.#path)
      return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`
    } catch {
      return undefined
    }
  }

  async #checkStat (): Promise<void> {
    if (this.#closed || this.#running !== undefined) return
    const now = await this.#signature()
    if (now !== this.#statSignature) {
      this.#statSignature = now
      this.#schedule()
    }
  }
}
