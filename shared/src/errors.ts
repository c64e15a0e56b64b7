/**
 * The error type every latchkey service throws for expected failures.
 *
 * `code` is stable (`GW_INVALID_GRANT`, `RS_INVALID_TOKEN`, ...): callers switch on it,
 * never on `message`. `error` and `description` are what goes on the wire as
 * `{ "error": ..., "error_description": ... }`; `statusCode` is the HTTP status.
 * A 5xx keeps its wire text generic: the cause is logged, never sent.
 */
export interface ErrorSpec {
  readonly statusCode: number
  /** The wire error code (RFC 6749 §5.2 / RFC 6750 §3.1 names where one applies). */
  readonly error: string
  readonly description: string
}

/**
 * Brands a LatchkeyError across copies of this module: each installable package
 * (@latchkey/verify, @latchkey/session-client) bundles its own, and an app using both must
 * still recognise either one's errors.
 */
const LATCHKEY_ERROR = Symbol.for('latchkey.error')

export class LatchkeyError extends Error {
  readonly code: string
  readonly statusCode: number
  readonly error: string
  readonly description: string
  readonly headers: Readonly<Record<string, string>>

  constructor (code: string, spec: ErrorSpec, options: { cause?: unknown, headers?: Record<string, string>, description?: string } = {}) {
    super(`${code}: ${options.description ?? spec.description}`, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'LatchkeyError'
    this.code = code
    this.statusCode = spec.statusCode
    this.error = spec.error
    this.description = options.description ?? spec.description
    this.headers = Object.freeze({ ...(options.headers ?? {}) })
  }

  get [LATCHKEY_ERROR] (): true { return true }
}

export function isLatchkeyError (err: unknown): err is LatchkeyError {
  return err instanceof LatchkeyError || (err instanceof Error && (err as unknown as Record<symbol, unknown>)[LATCHKEY_ERROR] === true)
}

/** Build a typed factory over one service's catalogue so codes cannot be misspelt. */
export function defineCatalogue<const C extends Record<string, ErrorSpec>> (catalogue: C) {
  const frozen = Object.freeze(catalogue)
  return {
    catalogue: frozen,
    create (code: keyof C & string, options?: { cause?: unknown, headers?: Record<string, string>, description?: string }): LatchkeyError {
      return new LatchkeyError(code, frozen[code] as ErrorSpec, options)
    }
  }
}

/** The wire body for an error: `{ error, error_description }`. */
export function errorBody (err: Pick<LatchkeyError, 'error' | 'description'>): { error: string, error_description: string } {
  return { error: err.error, error_description: err.description }
}

/** Raised by config parsing; the entry point prints `message` as one line and exits non-zero. */
export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID'
  readonly variable: string
  constructor (variable: string, problem: string) {
    super(`${variable}: ${problem}`)
    this.name = 'ConfigError'
    this.variable = variable
  }
}
