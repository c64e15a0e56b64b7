/**
 * `latchkey sessions list --user NAME [--json]`
 * `latchkey sessions revoke --user NAME [--session SID]`
 *
 * Forced logout from an operator's shell: the same Redis, key prefix and access-token
 * lifetime as the gateway (the gateway's own configuration loader reads the environment),
 * and the same session service, so a revocation here is published exactly as a logout is
 * and every replica refuses the session's access tokens within a second. The user is
 * looked up by name in USERS_FILE (sessions are keyed by the user's id).
 *
 * Exit codes: 0 done, 1 refused (no such user or session, Redis not answering), 2 usage or
 * configuration (no Redis configured: sessions then live inside the gateway process).
 */
import { parseCommandArgs } from './args.js'
import { pino } from 'pino'
import { systemClock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import { familyLimits, revocationTtlMs } from '../app.js'
import { loadGatewayConfig } from '../config.js'
import { readUsersFile } from '../identity/users-file.js'
import { createGatewayEvents } from '../ops/events.js'
import { createGatewayMetrics } from '../ops/metrics.js'
import { connectRedis, createRedisClient } from '../sessions/redis-connection.js'
import { RedisFamilyStore } from '../sessions/redis-family-store.js'
import { RedisRevocationBus } from '../sessions/revocation.js'
import { SessionRevocations, sessionView } from '../sessions/service.js'
import type { CliIo } from './io.js'

const USAGE = 'usage: latchkey sessions list --user NAME [--json]\n' +
  '       latchkey sessions revoke --user NAME [--session SID]   (Redis and USERS_FILE from the environment, as for the gateway)'

type Env = Readonly<Record<string, string | undefined>>

export async function runSessionsCommand (argv: string[], io: CliIo, env: Env): Promise<number> {
  let parsed
  try {
    parsed = parseCommandArgs(argv, { user: { type: 'string' }, session: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } })
  } catch (err) {
    io.stderr.write(`latchkey sessions: ${(err as Error).message.split('\n')[0]}\n${USAGE}\n`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help === true) {
    io.stdout.write(`${USAGE}\n`)
    return 0
  }
  const [sub, ...extra] = positionals
  if ((sub !== 'list' && sub !== 'revoke') || extra.length > 0 || values.user === undefined || (sub === 'list' && values.session !== undefined)) {
    io.stderr.write(`${USAGE}\n`)
    return 2
  }

  const config = loadGatewayConfig(env)
  if (config.redis.kind === 'none') {
    io.stderr.write('latchkey sessions: no Redis configured (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES): without Redis, sessions live inside the gateway process only\n')
    return 2
  }
  if (config.usersFile === undefined) {
    io.stderr.write('latchkey sessions: no USERS_FILE: users are looked up by name in it\n')
    return 2
  }
  const user = (await readUsersFile(config.usersFile)).find(u => u.username === values.user)
  if (user === undefined) {
    io.stderr.write(`latchkey sessions: no user ${JSON.stringify(values.user)} in ${config.usersFile}\n`)
    return 1
  }

  // Audit lines go to stderr as JSON, as the gateway's would; results go to stdout.
  const log = pino({ level: config.logLevel, base: { source: 'cli' } }, io.stderr)
  const clock = systemClock
  const redis = createRedisClient(config.redis, { keyPrefix: config.redisKeyPrefix, log })
  const store = new RedisFamilyStore({ client: redis, limits: familyLimits(config), clock, keyPrefix: config.redisKeyPrefix, waitReplicas: config.redisWaitReplicas })
  // Publish only: the CLI never starts the bus's subscriber.
  const bus = new RedisRevocationBus({ client: redis, keyPrefix: config.redisKeyPrefix, clock, ttlMs: revocationTtlMs(config), log })
  const sessions = new SessionRevocations({ store, edge: bus, events: createGatewayEvents(createGatewayMetrics()), log })
  try {
    await connectRedis(redis)
    if (sub === 'list') {
      const views = (await sessions.list(user.id)).map(sessionView)
      if (values.json === true) io.stdout.write(`${JSON.stringify(views)}\n`)
      else if (views.length === 0) io.stdout.write(`no live sessions of ${user.username}\n`)
      else for (const v of views) io.stdout.write(`${v.id}  ${v.client_id}  created ${v.created_at}  last used ${v.last_used_at}  ${v.ip}  ${v.user_agent}\n`)
      return 0
    }
    if (values.session !== undefined) {
      if (!(await sessions.revokeSession(user.id, values.session, 'cli'))) {
        io.stderr.write(`latchkey sessions: ${JSON.stringify(values.session)} is not a live session of ${user.username}\n`)
        return 1
      }
      io.stdout.write(`revoked session ${values.session} of ${user.username} at every replica\n`)
      return 0
    }
    const sids = await sessions.revokeAllForUser(user.id, 'cli')
    io.stdout.write(`revoked ${sids.length} session${sids.length === 1 ? '' : 's'} of ${user.username} at every replica\n`)
    return 0
  } catch (err) {
    if (!isLatchkeyError(err)) throw err
    io.stderr.write(`latchkey sessions: ${err.message}\n`)
    return 1
  } finally {
    await bus.close()
    await store.close()
  }
}
