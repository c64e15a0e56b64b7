/**
 * The users file (`USERS_FILE`), edited by `latchkey users add`:
 *
 *   {
 *     "users": [
 *       {
 *         "id": "usr_3k9Xq0b1Vt7mZr2E",          // token `sub`; stable, never reused
 *         "username": "alice",                   // login name, see below
 *         "password": "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>",
 *         "scope": "notes:read notes:write",     // RFC 6749 §3.3, may be ""
 *         "disabled": true                       // optional: the user cannot sign in or refresh
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
 * - `disabled`: optional, `true` or absent; a disabled user is kept (id, name) but does not
 *   exist for the gateway: logins fail as for an unknown name, refreshes are refused.
 * - No other keys: a typo'd key is an error, not a silently ignored field.
 *
 * The file is rewritten atomically (temp + rename) and created with mode 0600; an
 * existing file keeps its mode. The edits (`addUser`, `removeUser`, `setUser...`) are
 * read-modify-write: two concurrent runs against one file can lose one change, so run
 * them one at a time. The gateway reloads the file when it changes (ops/reloader.ts).
 */
import { randomBytes } from 'node:crypto'
import { ConfigError } from '#shared/errors.js'
import { parseJsonConfig } from '#shared/config-file.js'
import { readJsonFile, writeFileAtomic } from './json-file.js'
import { argon2idParams, hashPassword } from './password.js'
import { formatScope, parseScope } from './scope.js'

const VARIABLE = 'USERS_FILE'
export const MAX_USERNAME_LENGTH = 64
/** Longer passwords are refused before any hashing (a 1 MB body must not reach argon2). */
export const MAX_PASSWORD_LENGTH = 1024
/** NIST SP 800-63B §5.1.1.1: memorized secrets are at least 8 characters (Unicode code points, §5.1.1.2). */
export const MIN_PASSWORD_LENGTH = 8
const ID_FORMAT = /^[A-Za-z0-9._:~-]{1,128}$/
const USER_KEYS = new Set(['id', 'username', 'password', 'scope', 'disabled'])
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/

export interface StoredUser {
  readonly id: string
  readonly username: string
  /** argon2id PHC string. */
  readonly password: string
  /** Canonical RFC 6749 §3.3 scope string: tokens joined by one space, no duplicates. */
  readonly scope: string
  /** Kept in the file, unknown to the gateway (absent means enabled). */
  readonly disabled?: boolean
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

/** Why `password` cannot be set, or null: the rule `users add` and `users passwd` apply. */
export function passwordProblem (password: unknown): string | null {
  if (typeof password !== 'string' || password.length === 0) return 'must not be empty'
  if ([...password].length < MIN_PASSWORD_LENGTH) {
    return `must be at least ${MIN_PASSWORD_LENGTH} characters (NIST SP 800-63B §5.1.1: shorter passwords are guessed too easily)`
  }
  if (password.length > MAX_PASSWORD_LENGTH) return `must be at most ${MAX_PASSWORD_LENGTH} characters`
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
    const { id, username, password, scope, disabled } = rec
    if (typeof id !== 'string' || !ID_FORMAT.test(id)) fail(`${at}.id: expected 1..128 of A-Z a-z 0-9 . _ : ~ -`)
    const nameProblem = usernameProblem(username)
    if (typeof username !== 'string' || nameProblem !== null) fail(`${at}.username: ${nameProblem ?? 'must be a string'}`)
    // The hash is not echoed: a config error line ends up in logs.
    if (typeof password !== 'string' || argon2idParams(password) === null) fail(`${at}.password: expected an argon2id PHC string`)
    const tokens = typeof scope === 'string' ? parseScope(scope) : null
    if (tokens === null) fail(`${at}.scope: expected space-separated RFC 6749 scope tokens`)
    if (disabled !== undefined && typeof disabled !== 'boolean') fail(`${at}.disabled: expected true or false`)
    if (ids.has(id)) fail(`${at}.id: duplicate id "${id}"`)
    if (names.has(username)) fail(`${at}.username: duplicate username "${username}"`)
    ids.add(id)
    names.add(username)
    users.push({ id, username, password, scope: formatScope(tokens), ...(disabled === true ? { disabled } : {}) })
  }
  return users
}

/** Every user in `path`, validated; any problem is one ConfigError('USERS_FILE', ...). */
export async function readUsersFile (path: string): Promise<StoredUser[]> {
  return parseUsers(path, await readJsonFile(path, VARIABLE))
}

/** The users in `text` (the content of `path`), validated whole: what a reload applies. */
export function parseUsersText (text: string, path: string): StoredUser[] {
  return parseUsers(path, parseJsonConfig(text, path, VARIABLE))
}

function serialise (users: readonly StoredUser[]): string {
  const records = users.map(u => ({ id: u.id, username: u.username, password: u.password, scope: u.scope, ...(u.disabled === true ? { disabled: true } : {}) }))
  return `${JSON.stringify({ users: records }, null, 2)}\n`
}

/**
 * Hash `password` and append the user to `path` (created if absent). Refuses an invalid
 * username or scope, an empty or oversized password, and a username that already exists.
 */
export async function addUser (path: string, user: NewUser): Promise<Omit<StoredUser, 'password'>> {
  const nameProblem = usernameProblem(user.username)
  if (nameProblem !== null) throw new ConfigError('username', nameProblem)
  const pwProblem = passwordProblem(user.password)
  if (pwProblem !== null) throw new ConfigError('password', pwProblem)
  const scope = checkedScope(user.scope ?? '')

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

function checkedScope (scope: string): string[] {
  const tokens = parseScope(scope)
  if (tokens === null) throw new ConfigError('scope', 'expected space-separated RFC 6749 scope tokens (printable ASCII, no " or \\)')
  return tokens
}

export type UserSummary = Omit<StoredUser, 'password'>

function summary (user: StoredUser): UserSummary {
  return { id: user.id, username: user.username, scope: user.scope, ...(user.disabled === true ? { disabled: true } : {}) }
}

/**
 * Read-modify-write of one existing user (exact username): `change` returns the new record,
 * or null to delete it. The file must exist; an unknown name is a ConfigError.
 */
async function editUser (path: string, username: string, change: (user: StoredUser) => StoredUser | null): Promise<UserSummary> {
  const users = await readUsersFile(path)
  const index = users.findIndex(u => u.username === username)
  const current = users[index]
  if (current === undefined) throw new ConfigError(VARIABLE, `${path}: no user named "${username}"`)
  const next = change(current)
  const updated = next === null ? users.filter((_, i) => i !== index) : users.map((u, i) => i === index ? next : u)
  await writeFileAtomic(path, serialise(updated), VARIABLE)
  return summary(next ?? current)
}

/** Every user in the file, without password hashes, in file order. */
export async function listUsers (path: string): Promise<UserSummary[]> {
  return (await readUsersFile(path)).map(summary)
}

export async function removeUser (path: string, username: string): Promise<UserSummary> {
  return await editUser(path, username, () => null)
}

export async function setUserDisabled (path: string, username: string, disabled: boolean): Promise<UserSummary> {
  return await editUser(path, username, ({ disabled: _was, ...user }) => disabled ? { ...user, disabled: true } : user)
}

/** A new argon2id hash for `password`, refused as `addUser` refuses it. */
export async function setUserPassword (path: string, username: string, password: string): Promise<UserSummary> {
  const problem = passwordProblem(password)
  if (problem !== null) throw new ConfigError('password', problem)
  const hash = await hashPassword(password)
  return await editUser(path, username, (user) => ({ ...user, password: hash }))
}

export async function setUserScope (path: string, username: string, scope: string): Promise<UserSummary> {
  const tokens = checkedScope(scope)
  return await editUser(path, username, (user) => ({ ...user, scope: formatScope(tokens) }))
}
