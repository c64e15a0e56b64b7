/**
 * The request's logger (`request.log`, `reply.log`), made when a line is first written at
 * a level that is enabled: Fastify's `childLoggerFactory`.
 *
 * Fastify makes a pino child per request, bound to the request id, and pino serialises the
 * bindings of every child through the redaction (the `*.password` paths reach bindings
 * too): some 7,000 instructions per request, about 1.5% of a client_credentials token,
 * spent whether or not the request logs anything. At LOG_LEVEL=warn a request that
 * succeeds logs nothing. The child made here is the one Fastify would have made (the same
 * parent, bindings and options), so every line that is written is the same, request id
 * and redaction included.
 */
import type { FastifyBaseLogger, FastifyServerOptions } from 'fastify'
import type { Bindings, ChildLoggerOptions, Logger } from 'pino'

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'

class RequestLogger implements FastifyBaseLogger {
  readonly #parent: FastifyBaseLogger
  readonly #bindings: Bindings
  readonly #options: ChildLoggerOptions
  #child: FastifyBaseLogger | undefined

  constructor (parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions) {
    this.#parent = parent
    this.#bindings = bindings
    this.#options = options
  }

  #own (): FastifyBaseLogger {
    this.#child ??= this.#parent.child(this.#bindings, this.#options)
    return this.#child
  }

  /** The child's level is the parent's until one is set on it (pino children inherit it). */
  get level (): string {
    return this.#child?.level ?? this.#parent.level
  }

  set level (level: string) {
    this.#own().level = level
  }

  #write (level: Level, args: unknown[]): void {
    // Without a child, its level is the parent's (the factory below makes one at once otherwise).
    if (this.#child === undefined && !(this.#parent as Logger).isLevelEnabled(level)) return
    ;(this.#own()[level] as (...a: unknown[]) => void)(...args)
  }

  fatal (...args: unknown[]): void { this.#write('fatal', args) }
  error (...args: unknown[]): void { this.#write('error', args) }
  warn (...args: unknown[]): void { this.#write('warn', args) }
  info (...args: unknown[]): void { this.#write('info', args) }
  debug (...args: unknown[]): void { this.#write('debug', args) }
  trace (...args: unknown[]): void { this.#write('trace', args) }
  silent (): void {}

  child (bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#own().child(bindings, options)
  }
}

/**
 * For Fastify's `childLoggerFactory`. A route with a level of its own (`logLevel`), or a
 * parent that cannot say which levels it writes, gets its child at once, as before.
 */
export const lazyRequestLogger: NonNullable<FastifyServerOptions['childLoggerFactory']> = function (logger, bindings, options) {
  if (options.level !== undefined || typeof (logger as Partial<Logger>).isLevelEnabled !== 'function') return logger.child(bindings, options)
  return new RequestLogger(logger, bindings, options)
}
