/**
 * A `FamilyStore` whose every call is a span (`sessions.rotate`, `sessions.create`, ...), a
 * child of the request's span: with the Redis store each is one Lua script, so a trace shows
 * what a login or a refresh spent in Redis. Only built when tracing is on; an untraced
 * gateway uses the store itself. Wraps whatever the store exposes, so a method added to the
 * interface is traced without touching this file.
 */
import { SpanKind, SpanStatusCode, type Tracer } from '@opentelemetry/api'
import type { FamilyStore } from './family-store.js'

export function tracedFamilyStore (store: FamilyStore, tracer: Tracer, system: 'redis' | 'memory'): FamilyStore {
  return new Proxy(store, {
    get (target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver)
      if (typeof value !== 'function' || typeof property !== 'string') return value
      const method = value as (...args: unknown[]) => unknown
      const attributes = { 'db.system.name': system, 'db.operation.name': property }
      const kind = system === 'redis' ? SpanKind.CLIENT : SpanKind.INTERNAL
      return (...args: unknown[]): unknown => tracer.startActiveSpan(`sessions.${property}`, { kind, attributes }, (span) => {
        const failed = (err: unknown): never => {
          span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.name : 'error' })
          span.end()
          throw err
        }
        let result: unknown
        try {
          result = method.apply(target, args)
        } catch (err) {
          return failed(err)
        }
        if (!(result instanceof Promise)) {
          span.end()
          return result
        }
        return result.then((value: unknown) => { span.end(); return value }, failed)
      })
    }
  })
}
