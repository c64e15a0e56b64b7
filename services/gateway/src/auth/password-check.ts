/**
 * The one password check, for every place a person types a password (`/auth/login`, the
 * password grant, the authorization endpoint's password page): the brute-force limits
 * first (login-limiter.ts: 429 over a limit), then the users file's constant-time check,
 * then the failure line or the limiter's success.
 */
import type { FastifyRequest } from 'fastify'
import type { User, UserDirectory } from '../identity/user-directory.js'
import type { GatewayEvents } from '../ops/events.js'
import type { LoginLimiter } from './login-limiter.js'

export interface PasswordCheckDeps {
  readonly users: UserDirectory
  readonly limiter: LoginLimiter
  readonly events: GatewayEvents
}

/** The user, or null for a wrong username or password (the same answer, at the same cost). */
export async function checkPassword (deps: PasswordCheckDeps, req: FastifyRequest, username: string, password: string): Promise<User | null> {
  await deps.limiter.check(req, username)
  const user = await deps.users.authenticate(username, password)
  if (user === null) {
    deps.events.loginFailed(req, username)
    return null
  }
  await deps.limiter.succeeded(req, username)
  return user
}
