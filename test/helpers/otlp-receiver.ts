/**
 * An in-process OTLP/HTTP trace receiver for tests: accepts `POST /v1/traces` with the JSON
 * encoding (what @opentelemetry/exporter-trace-otlp-http sends) and keeps every span with
 * its service name, so a test can follow one trace across real processes.
 */
import { createServer, type Server } from 'node:http'

export interface ReceivedSpan {
  readonly service: string
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
  readonly kind: number
  readonly attributes: Readonly<Record<string, unknown>>
}

interface OtlpValue { stringValue?: string, intValue?: string | number, boolValue?: boolean, doubleValue?: number }
interface OtlpAttribute { key: string, value: OtlpValue }
interface OtlpSpan { traceId: string, spanId: string, parentSpanId?: string, name: string, kind: number, attributes?: OtlpAttribute[] }
interface OtlpExport { resourceSpans?: Array<{ resource?: { attributes?: OtlpAttribute[] }, scopeSpans?: Array<{ spans?: OtlpSpan[] }> }> }

function plain (value: OtlpValue): unknown {
  return value.stringValue ?? value.intValue ?? value.boolValue ?? value.doubleValue
}

export interface OtlpReceiver {
  /** The base URL to give as OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly endpoint: string
  readonly spans: ReceivedSpan[]
  /** Resolves once a span matching `match` has arrived (or rejects after `timeoutMs`). */
  waitFor (match: (span: ReceivedSpan) => boolean, timeoutMs?: number): Promise<ReceivedSpan>
  close (): Promise<void>
}

export async function startOtlpReceiver (): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = []
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end()
        return
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpExport
      for (const rs of body.resourceSpans ?? []) {
        const service = String(plain(rs.resource?.attributes?.find(a => a.key === 'service.name')?.value ?? {}) ?? '')
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              service,
              name: s.name,
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId === '' ? undefined : s.parentSpanId,
              kind: s.kind,
              attributes: Object.fromEntries((s.attributes ?? []).map(a => [a.key, plain(a.value)]))
            })
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    async waitFor (match, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const found = spans.find(match)
        if (found !== undefined) return found
        if (Date.now() > deadline) throw new Error(`no matching span within ${timeoutMs} ms; received: ${spans.map(s => `${s.service}:${s.name}`).join(', ')}`)
        await new Promise(resolve => setTimeout(resolve, 50))
      }
    },
    close: async () => { await new Promise<void>(resolve => server.close(() => { resolve() })) }
  }
}
