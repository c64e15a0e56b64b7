/**
 * One wording for the same fault in every configuration file (USERS_FILE, CLIENTS_FILE,
 * ROUTES_FILE, SIGNING_KEYS_FILE, ...): `<path>: file not found`, `<path>: permission
 * denied (...)`, `<path>: not valid JSON at line L, column C`. A JSON parser's own message
 * is never passed on: V8 quotes the text around the error, and these files hold hashes and
 * key material. A position (line and column) is not content, so it is given.
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { ConfigError } from './errors.js'

/** Where README.md explains the uid a container runs as (Docker Compose, `./secrets`). */
export const PERMISSION_HINT = 'with Docker Compose, see LATCHKEY_UID in README.md "Docker Compose"'

function errnoCode (err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined
}

/** What went wrong reading (or writing) a file, in the words every configuration error uses. */
export function fileProblem (err: unknown, doing: 'read' | 'write' = 'read'): string {
  const code = errnoCode(err)
  switch (code) {
    case 'ENOENT': return doing === 'read' ? 'file not found' : 'its directory does not exist'
    case 'EACCES':
    case 'EPERM': return `permission denied (${PERMISSION_HINT})`
    case 'EISDIR': return 'is a directory, not a file'
    default: return `cannot be ${doing === 'read' ? 'read' : 'written'} (${code ?? 'I/O error'})`
  }
}

/** Whether reading failed because the file is not there (callers that accept a missing file). */
export function isFileMissing (err: unknown): boolean {
  return errnoCode(err) === 'ENOENT'
}

/** 1-based line and column of a 0-based character offset. */
export function lineColumn (text: string, offset: number): { line: number, column: number } {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)))
  const lastBreak = before.lastIndexOf('\n')
  return { line: before.split('\n').length, column: offset - lastBreak }
}

/** V8 names the offset of most syntax errors: "... in JSON at position 42". */
function reportedOffset (err: unknown): number | undefined {
  const at = err instanceof Error ? /at position (\d+)/.exec(err.message) : null
  return at?.[1] === undefined ? undefined : Number(at[1])
}

/**
 * Whether `prefix` can still begin a valid JSON text: it parses, or it fails only for want
 * of more input (V8 reports the end of input, or an offset at or past the prefix's end).
 */
function viablePrefix (prefix: string): boolean {
  try {
    JSON.parse(prefix)
    return true
  } catch (err) {
    if (err instanceof Error && /end of JSON input/.test(err.message)) return true
    const offset = reportedOffset(err)
    return offset !== undefined && offset >= prefix.length
  }
}

/**
 * Offset of the first character that makes `text` invalid JSON. V8 gives it for most
 * errors but not for "Unexpected token 'x', "..." is not valid JSON", so it is found as the
 * longest prefix that could still begin valid JSON (prefixes of a viable prefix are viable):
 * a binary search, a few dozen parses of a small file.
 */
export function jsonErrorOffset (text: string, err: unknown): number {
  const reported = reportedOffset(err)
  if (reported !== undefined) return reported
  let lo = 0
  let hi = text.length
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2)
    if (viablePrefix(text.slice(0, mid))) lo = mid
    else hi = mid - 1
  }
  return lo
}

/** `JSON.parse(text)`, or ConfigError(variable, '<path>: not valid JSON at line L, column C'). */
export function parseJsonConfig (text: string, path: string, variable: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch (err) {
    const { line, column } = lineColumn(text, jsonErrorOffset(text, err))
    throw new ConfigError(variable, `${path}: not valid JSON at line ${line}, column ${column}`)
  }
}

/** The file's text, or ConfigError(variable, '<path>: <fileProblem>'). */
export function readConfigFileSync (path: string, variable: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(variable, `${path}: ${fileProblem(err)}`)
  }
}

/** As `readConfigFileSync`; `undefined` for a missing file when `missingOk`. */
export async function readConfigFile (path: string, variable: string): Promise<string>
export async function readConfigFile (path: string, variable: string, missingOk: boolean): Promise<string | undefined>
export async function readConfigFile (path: string, variable: string, missingOk = false): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if (missingOk && isFileMissing(err)) return undefined
    throw new ConfigError(variable, `${path}: ${fileProblem(err)}`)
  }
}
