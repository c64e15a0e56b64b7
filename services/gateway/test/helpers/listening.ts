/**
 * A gateway listening on a real loopback port (for clients that speak HTTP, such as
 * oauth4webapi), with ISSUER set to its own address.
 */
import type { Test } from 'tap'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { addClient } from '#gateway/identity/clients-file.js'
import type { GatewayDeps } from '#gateway/app.js'
import { freePort } from '../../../../test/helpers/redis.js'
import { buildTestGateway, type TestGateway } from './gateway.js'

export interface ListeningGateway extends TestGateway {
  readonly base: string
}

export async function listeningGateway (t: Test, env: Record<string, string> = {}, deps: Partial<GatewayDeps> = {}): Promise<ListeningGateway> {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const gw = await buildTestGateway(t, { ISSUER: base, PORT: String(port), ...env }, deps)
  await gw.app.listen({ port, host: '127.0.0.1' })
  return { ...gw, base }
}

export interface TestClients {
  readonly file: string
  readonly secrets: Readonly<Record<string, string>>
}

/** svc-a: client_credentials for two audiences; web: password + refresh_token; ro: no grants but client_credentials. */
export async function testClients (): Promise<TestClients> {
  const file = join(mkdtempSync(join(tmpdir(), 'lk-clients-')), 'clients.json')
  const secrets: Record<string, string> = {}
  secrets['svc-a'] = (await addClient(file, { id: 'svc-a', scope: 'internal:read notes:read', audiences: ['latchkey-api', 'billing'], grants: ['client_credentials'] })).secret
  secrets.web = (await addClient(file, { id: 'web', scope: 'notes:read notes:write', audiences: ['latchkey-api'], grants: ['password', 'refresh_token'] })).secret
  secrets.svc_b = (await addClient(file, { id: 'svc-b', scope: 'internal:read', audiences: ['latchkey-api'], grants: ['client_credentials'] })).secret
  return { file, secrets }
}

export function claimsOf (jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1] as string, 'base64url').toString()) as Record<string, unknown>
}
