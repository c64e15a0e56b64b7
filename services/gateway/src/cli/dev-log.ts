/**
 * Log lines for a person at a terminal, for `latchkey dev` only (everything else, and `dev`
 * with its output piped, writes pino's JSON lines for machines). pino-pretty renders each
 * line; Fastify's two lines per request ("incoming request", "request completed") become
 * one, `GET /api/me → 200 (3 ms)`.
 */
import type { DestinationStream } from 'pino'
import { prettyFactory } from 'pino-pretty'

/** Requests seen but not yet answered, per service; more than this means lines are being lost. */
export const MAX_PENDING_REQUESTS = 10_000

interface RequestLine {
  readonly reqId?: unknown
  readonly msg?: unknown
  readonly req?: { readonly method?: unknown, readonly url?: unknown }
  readonly res?: { readonly statusCode?: unknown }
  readonly responseTime?: unknown
  [key: string]: unknown
}

/**
 * A pino destination that writes pretty lines to `out`, each tagged with `service`
 * (the gateway and the resource share one terminal in `dev`).
 */
export function devLogStream (out: { write (chunk: string): unknown }, service: string, options: { colorize: boolean }): DestinationStream {
  const pretty = prettyFactory({
    colorize: options.colorize,
    translateTime: 'SYS:HH:MM:ss',
    ignore: 'pid,hostname,reqId,service',
    messageFormat: `{service}  {msg}`,
    singleLine: true
  })
  const pending = new Map<unknown, string>()
  return {
    write (line: string): void {
      let log: RequestLine
      try {
        log = JSON.parse(line) as RequestLine
      } catch {
        out.write(line)
        return
      }
      if (log.msg === 'incoming request' && log.req !== undefined) {
        if (pending.size >= MAX_PENDING_REQUESTS) pending.clear()
        pending.set(log.reqId, `${String(log.req.method)} ${String(log.req.url)}`)
        return
      }
      if (log.msg === 'request completed' && log.res !== undefined) {
        const request = pending.get(log.reqId) ?? 'request'
        pending.delete(log.reqId)
        const { res, responseTime, ...rest } = log
        const ms = typeof responseTime === 'number' ? ` (${Math.round(responseTime)} ms)` : ''
        log = { ...rest, msg: `${request} → ${String(res.statusCode)}${ms}` }
      }
      out.write(pretty({ ...log, service }))
    }
  }
}
