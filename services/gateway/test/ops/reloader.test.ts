/**
 * FileReloader against a real directory: in-place writes, atomic renames, a Kubernetes
 * Secret's `..data` symlink swap, a symlink into another directory, refused files, SIGHUP-style
 * `reload()`. Events are awaited (the apply callback resolves a promise), never slept on.
 */
import t, { type Test } from 'tap'
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '#shared/errors.js'
import { FileReloader, type ReloadResult } from '#gateway/ops/reloader.js'

/** Longest a test waits for a change to arrive; far above the debounce, far below the tap timeout. */
const EVENT_WAIT_MS = 5_000

interface Harness {
  readonly reloader: FileReloader<{ v: number }>
  readonly errors: string[]
  readonly counts: Array<{ file: string, result: ReloadResult }>
  /** The next value `apply` receives. */
  next (): Promise<{ v: number }>
  /** The next refused reload. */
  nextFailure (): Promise<string>
}

function parse (text: string): { v: number } {
  let data: unknown
  try { data = JSON.parse(text) } catch { throw new ConfigError('TEST_FILE', 'is not valid JSON') }
  if (typeof data !== 'object' || data === null || typeof (data as { v?: unknown }).v !== 'number') throw new ConfigError('TEST_FILE', 'expected {"v": number}')
  return { v: (data as { v: number }).v }
}

function harness (t: Test, path: string, pollMs = 0, watchDirs = true): Harness {
  const errors: string[] = []
  const counts: Array<{ file: string, result: ReloadResult }> = []
  const applied: Array<{ v: number }> = []
  let waiter: (() => void) | undefined
  let failureWaiter: ((line: string) => void) | undefined
  const reloader = new FileReloader({
    path,
    name: 'TEST_FILE',
    parse,
    apply: (value) => { applied.push(value); waiter?.() },
    log: {
      info: () => {},
      error: (_obj, msg) => { errors.push(msg); failureWaiter?.(msg) }
    },
    counter: { inc: (labels) => { counts.push(labels) } },
    debounceMs: 20,
    pollMs,
    watch: watchDirs
  })
  t.teardown(() => { reloader.close() })
  const within = async <V>(what: string, register: (resolve: (v: V) => void) => void): Promise<V> => {
    return await new Promise<V>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`no ${what} within ${EVENT_WAIT_MS} ms`)) }, EVENT_WAIT_MS)
      register((v) => { clearTimeout(timer); resolve(v) })
    })
  }
  return {
    reloader,
    errors,
    counts,
    next: async () => await within('apply', (resolve) => {
      const seen = applied.length
      waiter = () => { if (applied.length > seen) { waiter = undefined; resolve(applied[applied.length - 1] as { v: number }) } }
    }),
    nextFailure: async () => await within('refusal', (resolve) => {
      failureWaiter = (line) => { failureWaiter = undefined; resolve(line) }
    })
  }
}

function tempDir (): string {
  return mkdtempSync(join(tmpdir(), 'lk-reloader-'))
}

/** Write `{"v": v}` to `file`; what the reloader applies next. */
async function applied (h: Harness, file: string, v: number): Promise<{ v: number }> {
  const next = h.next()
  writeFileSync(file, `{"v": ${v}}`)
  return await next
}

/** A fresh `f.json` holding `{"v": 1}`, watched by a harness that has loaded it. */
async function loadedFile (t: Test, pollMs = 0, watchDirs = true): Promise<{ dir: string, file: string, h: Harness }> {
  const dir = tempDir()
  const file = join(dir, 'f.json')
  writeFileSync(file, '{"v": 1}')
  const h = harness(t, file, pollMs, watchDirs)
  await h.reloader.load()
  return { dir, file, h }
}

/** What `kubectl apply` of a Secret does to its mounted volume (atomic_writer.go in the kubelet). */
function kubeletSwap (dir: string, stamp: string, files: Record<string, string>, old?: string): void {
  const data = join(dir, stamp)
  mkdirSync(data)
  for (const [name, text] of Object.entries(files)) writeFileSync(join(data, name), text)
  symlinkSync(stamp, join(dir, '..data_tmp'))
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
  if (old !== undefined) rmSync(join(dir, old), { recursive: true })
}

t.test('load() parses the file and is not applied; an in-place write is', async (t) => {
  const file = join(tempDir(), 'f.json')
  writeFileSync(file, '{"v": 1}')
  const h = harness(t, file)
  t.same(await h.reloader.load(), { v: 1 })
  await h.reloader.start()
  t.same(await applied(h, file, 2), { v: 2 })
  t.same(h.counts, [{ file: 'TEST_FILE', result: 'success' }])
})

t.test('an atomic rename over the file is picked up', async (t) => {
  const { dir, file, h } = await loadedFile(t)
  await h.reloader.start()
  const next = h.next()
  writeFileSync(join(dir, '.f.json.tmp'), '{"v": 3}')
  renameSync(join(dir, '.f.json.tmp'), file)
  t.same(await next, { v: 3 })
})

t.test('a Kubernetes Secret ..data symlink swap is picked up, twice', async (t) => {
  const dir = tempDir()
  kubeletSwap(dir, '..2026_12_04_05_00_00.1', { 'f.json': '{"v": 1}' })
  symlinkSync('..data/f.json', join(dir, 'f.json'))
  const h = harness(t, join(dir, 'f.json'))
  t.same(await h.reloader.load(), { v: 1 })
  await h.reloader.start()
  let next = h.next()
  kubeletSwap(dir, '..2026_12_04_05_01_00.2', { 'f.json': '{"v": 2}' }, '..2026_12_04_05_00_00.1')
  t.same(await next, { v: 2 }, 'first swap')
  next = h.next()
  kubeletSwap(dir, '..2026_12_04_05_02_00.3', { 'f.json': '{"v": 3}' }, '..2026_12_04_05_01_00.2')
  t.same(await next, { v: 3 }, 'second swap: the watch followed the new target')
  t.same(h.errors, [])
})

t.test('a symlink into another directory: changes there are picked up', async (t) => {
  const real = join(tempDir(), 'real.json')
  writeFileSync(real, '{"v": 1}')
  const link = join(tempDir(), 'f.json')
  symlinkSync(real, link)
  const h = harness(t, link)
  await h.reloader.load()
  await h.reloader.start()
  t.same(await applied(h, real, 5), { v: 5 })
})

t.test('a malformed file is refused with one error line and a metric; the old value stays, a fixed one is applied', async (t) => {
  const { file, h } = await loadedFile(t)
  await h.reloader.start()
  const refused = h.nextFailure()
  writeFileSync(file, '{"v": "secret-ish content"')
  const line = await refused
  t.match(line, /^TEST_FILE not reloaded, the previous one stays in force: TEST_FILE: is not valid JSON$/)
  t.notMatch(line, /secret-ish/, 'the file content is not echoed')
  t.same(h.counts, [{ file: 'TEST_FILE', result: 'failure' }])
  t.equal(h.errors.length, 1, 'one error line')
  t.same(await applied(h, file, 4), { v: 4 })
  t.same(h.counts.map(c => c.result), ['failure', 'success'])
})

t.test('reload() (SIGHUP) re-reads without a watch; unchanged content is not applied again; a missing file is refused', async (t) => {
  const { file, h } = await loadedFile(t)
  t.equal(await h.reloader.reload(), 'unchanged')
  writeFileSync(file, '{"v": 2}')
  const next = h.next()
  t.equal(await h.reloader.reload(), 'success')
  t.same(await next, { v: 2 })
  t.equal(await h.reloader.reload(), 'unchanged')
  rmSync(file)
  t.equal(await h.reloader.reload(), 'failure')
  t.match(h.errors[0], /cannot be read \(ENOENT\)/)
  t.same(h.counts.map(c => c.result), ['success', 'failure'])
})

t.test('concurrent reload() calls share one run', async (t) => {
  const { file, h } = await loadedFile(t)
  writeFileSync(file, '{"v": 2}')
  const outcomes = await Promise.all([h.reloader.reload(), h.reloader.reload(), h.reloader.reload()])
  t.ok(outcomes.includes('success'))
  t.same(h.counts, [{ file: 'TEST_FILE', result: 'success' }], 'applied once')
})

t.test('the stat poll notices a change the watch did not report', async (t) => {
  // No directory watch, as on a filesystem without inotify: only the poll is left.
  const { file, h } = await loadedFile(t, 30, false)
  await h.reloader.start()
  t.same(await applied(h, file, 7), { v: 7 })
})

t.test('a change between load() and start() is applied once watching starts', async (t) => {
  const { file, h } = await loadedFile(t)
  writeFileSync(file, '{"v": 8}')
  const next = h.next()
  await h.reloader.start()
  t.same(await next, { v: 8 })
})
