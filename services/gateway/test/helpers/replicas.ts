/**
 * Two gateway replicas in one process sharing one redis-server (their sessions and the
 * edge-revocation channel) and one signing key, each with its own user and client
 * directory (as two pods that loaded the same files), in front of one echo upstream.
 */
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClientDirectory } from '#gateway/identity/clients-file.js'
import { UserDirectory } from '#gateway/identity/user-directory.js'
import { addUser } from '#gateway/identity/users-file.js'
import { redisForTest, type TestRedis } from '../../../../test/helpers/redis.js'
import { echoUpstream } from '../proxy/harness.js'
import { buildTestGateway, TEST_PASSWORD, type TestGateway } from './gateway.js'
import { testClients, type TestClients } from './listening.js'

export interface Replica extends TestGateway {
  readonly users: UserDirectory
  readonly clients: ClientDirectory
}

export interface ReplicaPair {
  readonly a: Replica
  readonly b: Replica
  readonly redis: TestRedis
   /** alice (notes:read notes:write) and bob (notes:read). */
  readonly usersFile: string
  readonly clientsFile: string
  readonly clientSecrets: TestClients['secrets']
}

/** A users file with alice and bob; the same password as the other tests. */
export async function writeUsersFile (): Promise<string> {
  const file = join(mkdtempSync(join(tmpdir(), 'lk-users-')), 'users.json')
  await addUser(file, { username: 'alice', password: TEST_PASSWORD, scope: 'notes:read notes:write' })
  await addUser(file, { username: 'bob', password: TEST_PASSWORD, scope: 'notes:read' })
  return file
}

export async function replicaPair (t: Test, env: Record<string, string> = {}): Promise<ReplicaPair> {
  const redis = await redisForTest(t)
  const upstream = await echoUpstream(t)
  const usersFile = await writeUsersFile()
  const clients = await testClients()
  const shared = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, RESOURCE_URL: upstream.url, CLIENTS_FILE: clients.file, ...env }
  async function replica (keys?: TestGateway['app']['latchkey']['deps']['keys']): Promise<Replica> {
    const users = (await UserDirectory.load(usersFile)).directory
    const directory = await ClientDirectory.load(clients.file)
    const gw = await buildTestGateway(t, shared, { users, clients: directory, ...(keys === undefined ? {} : { keys }) })
    return { ...gw, users, clients: directory }
  }
  const a = await replica()
  const b = await replica(a.app.latchkey.deps.keys)
  return { a, b, redis, usersFile, clientsFile: clients.file, clientSecrets: clients.secrets }
}

/** The status a proxied GET with `token` gets (200 from the upstream, 401 at the edge). */
export async function proxiedStatus (app: FastifyInstance, token: string): Promise<number> {
  const res = await app.inject({ method: 'GET', url: '/api/me', headers: { authorization: `Bearer ${token}` } })
  return res.statusCode
}

/** Milliseconds until `app`'s proxy refuses `token`, polling every 5 ms; -1 after `timeoutMs`. */
export async function msUntilRefused (app: FastifyInstance, token: string, since: number, timeoutMs = 2000): Promise<number> {
  while (await proxiedStatus(app, token) !== 401) {
    if (Date.now() - since > timeoutMs) return -1
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  return Date.now() - since
}
