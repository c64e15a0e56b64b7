/**
 * Load with autocannon: one fixed-duration run after a warm-up run, connections kept
 * alive, one request in flight per connection. Latencies are recorded per response at
 * microsecond resolution (autocannon's own histogram keeps whole milliseconds, too
 * coarse for sub-millisecond rows), and percentiles are exact over the samples kept.
 *
 * A chained load gives each connection its own script: the request it sends is built
 * from the answer to its previous one (a refresh token that rotates on every request).
 */
import autocannon from 'autocannon'

export interface ConnectionScript {
  /** Headers and body of the next request of this connection. */
  next (): { headers?: Record<string, string>, body?: string }
  /** Every answer, before the next request is built. */
  answered (status: number, body: string, headers: Record<string, string | string[]>): void
}

export interface LoadSpec {
  readonly url: string
  readonly method: 'GET' | 'POST'
  readonly path: string
  readonly headers?: Record<string, string>
  readonly body?: string
  readonly connections: number
  /** A fresh script per connection; the load is chained when set. */
  readonly perConnection?: () => ConnectionScript
  /** For the caller to run once the load has stopped (e.g. revoke the sessions the chains used). */
  readonly cleanup?: () => Promise<void>
}

export interface Sample {
  readonly durationS: number
  readonly ok: number
  readonly non2xx: number
  readonly errors: number
  readonly timeouts: number
  readonly statusCodes: Record<string, number>
  readonly latenciesMs: Float64Array
}

/** A growable list of numbers without per-element allocation. */
class Floats {
  #data = new Float64Array(1 << 16)
  length = 0
  push (v: number): void {
    if (this.length === this.#data.length) {
      const bigger = new Float64Array(this.#data.length * 2)
      bigger.set(this.#data)
      this.#data = bigger
    }
    this.#data[this.length++] = v
  }

  values (): Float64Array {
    return this.#data.slice(0, this.length)
  }
}

type Headers = Record<string, string | string[]>

export async function runLoad (spec: LoadSpec, durationS: number): Promise<Sample> {
  const latencies = new Floats()
  const target = new URL(spec.path, spec.url)
  const options: autocannon.Options = {
    // The path rides in the URL (autocannon takes it from there).
    url: target.href,
    connections: spec.connections,
    pipelining: 1,
    duration: durationS,
    timeout: 10,
    method: spec.method,
    headers: spec.headers,
    body: spec.body
  }
  const perConnection = spec.perConnection
  if (perConnection !== undefined) {
    options.setupClient = (client) => {
      const script = perConnection()
      client.setRequests([{
        method: spec.method,
        path: target.pathname + target.search,
        setupRequest: (request) => {
          const next = script.next()
          return { ...request, headers: { ...spec.headers, ...next.headers }, body: next.body ?? spec.body }
        },
        onResponse: (status, body, _context, headers) => { script.answered(status, body, (headers ?? {}) as Headers) }
      }])
    }
  }
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(options, (err, res) => {
      if (err !== null && err !== undefined) reject(err)
      else resolve(res)
    })
    instance.on('response', (_client: unknown, _status: number, _bytes: number, responseTimeMs: number) => { latencies.push(responseTimeMs) })
  })
  const statusCodes: Record<string, number> = {}
  for (const [code, stats] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = (stats as { count: number }).count
  return {
    durationS: result.duration,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    latenciesMs: latencies.values()
  }
}

export interface Summary {
  /**
   * 2xx answers per second: the median over the rounds. Other processes on a shared
   * machine only ever take throughput away, in bursts; the median of alternating rounds
   * keeps one unlucky round from deciding a ratio.
   */
  readonly rps: number
  /** Each round's 2xx answers per second, in the order run. */
  readonly rps_rounds: number[]
  readonly p50_ms: number
  readonly p99_ms: number
  readonly requests: number
  readonly non2xx: number
  readonly errors: number
  readonly timeouts: number
  readonly status_codes: Record<string, number>
  readonly seconds: number
}

function percentile (sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank] as number
}

function median (xs: readonly number[]): number {
  if (xs.length === 0) return 0
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] as number : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

/** The samples of one row (several alternating rounds) as one figure. */
export function summarise (samples: readonly Sample[]): Summary {
  const seconds = samples.reduce((s, x) => s + x.durationS, 0)
  const ok = samples.reduce((s, x) => s + x.ok, 0)
  const all = new Float64Array(samples.reduce((s, x) => s + x.latenciesMs.length, 0))
  let at = 0
  for (const s of samples) { all.set(s.latenciesMs, at); at += s.latenciesMs.length }
  all.sort()
  const statusCodes: Record<string, number> = {}
  for (const s of samples) for (const [code, n] of Object.entries(s.statusCodes)) statusCodes[code] = (statusCodes[code] ?? 0) + n
  const perRound = samples.map(x => x.durationS > 0 ? x.ok / x.durationS : 0)
  return {
    rps: median(perRound),
    rps_rounds: perRound.map(r => Math.round(r)),
    p50_ms: percentile(all, 50),
    p99_ms: percentile(all, 99),
    requests: ok + samples.reduce((s, x) => s + x.non2xx, 0),
    non2xx: samples.reduce((s, x) => s + x.non2xx, 0),
    errors: samples.reduce((s, x) => s + x.errors, 0),
    timeouts: samples.reduce((s, x) => s + x.timeouts, 0),
    status_codes: statusCodes,
    seconds
  }
}
