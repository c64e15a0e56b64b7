/**
 * The users file (`USERS_FILE`), edited by `latchkey users add`:
 *
 *   {
 *     "users": [
 *       {
 *         "id": "usr_3k9Xq0b1Vt7mZr2E",          // token `sub`; stable, never reused
 *         "username": "alice",                   // login name, see below
 *         "password": "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>",
 *         "scope": "notes:read notes:write"      // RFC 6749 §3.3, may be ""
 *       }
 *     ]
 *   }
 *
 * - `id`: 1..128 of `A-Z a-z 0-9 . _ : ~ -`; generated as `usr_` + 96 random bits.
 * - `username`: 1..64 characters, no control characters, no leading/trailing space.
 *   Logins compare it exactly (case-sensitive, no Unicode normalisation); `addUser`
 *   also refuses a name equal to an existing one ignoring case and compatibility
 *   forms (NFKC), so two accounts can never differ only in how they look.
 * - `password`: an argon2id PHC string, never plaintext (see password.ts).
 * - No other keys: a typo'd key is an error, not a silently ignored field.
 *
 * The file is rewritten atomically (temp + rename) and created with mode 0600.
 * `addUser` is read-modify-write: two concurrent runs against one file can lose one
 * addition, so run them one at a time.
 */
import { randomBytes } from 'node:crypto'
import { ConfigError } from '#shared/errors.js'
import { readJsonFile, writeFileAtomic } from './json-file.js'
import { argon2idParams, hashPassword } from './password.js'
import { formatScope, parseScope } from './scope.js'

const VARIABLE = 'USERS_FILE'
export const MAX_USERNAME_LENGTH = 64
/** Longer passwords are refused before any hashing (a 1 MB body must not reach argon2). */
export const MAX_PASSWORD_LENGTH = 1024
const ID_FORMAT = /^[A-Za-z0-9._:~-]{1,128}$/
const USER_KEYS = new Set(['id', 'username', 'password', 'scope'])
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/

export interface StoredUser {
  readonly id: string
  readonly username: string
  /** argon2id PHC string. */
  readonly password: string
  /** Canonical RFC 6749 §3.3 scope string: tokens joined by one space, no duplicates. */
  readonly scope: string
}

export interface NewUser {
  readonly username: string
  readonly password: string
  /** Space-separated scope tokens; default none. */
  readonly scope?: string
}

/** Why `name` is not an acceptable username, or null if it is. */
export function usernameProblem (name: unknown): string | null {
  if (typeof name !== 'string') return 'must be a string'
  const length = [...name].length
  if (length < 1 || length > MAX_USERNAME_LENGTH) return `must be 1..${MAX_USERNAME_LENGTH} characters`
  if (CONTROL.test(name)) return 'must not contain control characters'
  if (name.trim() !== name) return 'must not start or end with whitespace'
  return null
}

function foldUsername (name: string): string {
  return name.normalize('NFKC').toLowerCase()
}

export function newUserId (): string {
  return `usr_${randomBytes(12).toString('base64url')}`
}

function parseUsers (path: string, data: unknown): StoredUser[] {
  function fail (problem: string): never {
    throw new ConfigError(VARIABLE, `${path}: ${problem}`)
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data) || !('users' in data) || !Array.isArray(data.users)) {
    fail('expected an object {"users": [...]}')
  }
  const entries: unknown[] = data.users
  const users: StoredUser[] = []
  const ids = new Set<string>()
  const names = new Set<string>()
  for (const [i, entry] of entries.entries()) {
    const at = `users[${i}]`
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(`${at}: expected an object`)
    const rec = entry as Record<string, unknown>
    for (const key of Object.keys(rec)) if (!USER_KEYS.has(key)) fail(`${at}: unknown key "${key}"`)
    const { id, username, password, scope } = rec
    if (typeof id !== 'string' || !ID_FORMAT.test(id)) fail(`${at}.id: expected 1..128 of A-Z a-z 0-9 . _ : ~ -`)
    const nameProblem = usernameProblem(username)
    if (typeof username !== 'string' || nameProblem !== null) fail(`${at}.username: ${nameProblem ?? 'must be a string'}`)
    // The hash is not echoed: a config error line ends up in logs.
    if (typeof password !== 'string' || argon2idParams(password) === null) fail(`${at}.password: expected an argon2id PHC string`)
    const tokens = typeof scope === 'string' ? parseScope(scope) : null
    if (tokens === null) fail(`${at}.scope: expected space-separated RFC 6749 scope tokens`)
    if (ids.has(id)) fail(`${at}.id: duplicate id "${id}"`)
    if (names.has(username)) fail(`${at}.username: duplicate username "${username}"`)
    ids.add(id)
    names.add(username)
    users.push({ id, username, password, scope: formatScope(tokens) })
  }
  return users
}

/** Every user in `path`, validated; any problem is one ConfigError('USERS_FILE', ...). */
export async function readUsersFile (path: string): Promise<StoredUser[]> {
  return parseUsers(path, await readJsonFile(path, VARIABLE))
}

function serialise (users: readonly StoredUser[]): string {
  const records = users.map(u => ({ id: u.id, username: u.username, password: u.password, scope: u.scope }))
  return `${JSON.stringify({ users: records }, null, 2)}\n`
}

/**
 * Hash `password` and append the user to `path` (created if absent). Refuses an invalid
 * username or scope, an empty or oversized password, and a username that already exists.
 */
export async function addUser (path: string, user: NewUser): Promise<Omit<StoredUser, 'password'>> {
  const nameProblem = usernameProblem(user.username)
  if (nameProblem !== null) throw new ConfigError('username', nameProblem)
  if (typeof user.password !== 'string' || user.password.length === 0) throw new ConfigError('password', 'must not be empty')
  if (user.password.length > MAX_PASSWORD_LENGTH) throw new ConfigError('password', `must be at most ${MAX_PASSWORD_LENGTH} characters`)
  const scope = parseScope(user.scope ?? '')
  if (scope === null) throw new ConfigError('scope', 'expected space-separated RFC 6749 scope tokens (printable ASCII, no " or \\)')

  const data = await readJsonFile(path, VARIABLE, true)
  const users = data === undefined ? [] : parseUsers(path, data)
  const folded = foldUsername(user.username)
  if (users.some(u => foldUsername(u.username) === folded)) {
    throw new ConfigError(VARIABLE, `${path}: a user named "${user.username}" (or one differing only in case) already exists`)
  }
  let id = newUserId()
  while (users.some(u => u.id === id)) id = newUserId()
  const stored: StoredUser = { id, username: user.username, password: await hashPassword(user.password), scope: formatScope(scope) }
  await writeFileAtomic(path, serialise([...users, stored]), VARIABLE)
  return { id, username: stored.username, scope: stored.scope }
}
