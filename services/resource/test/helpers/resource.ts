import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Test } from 'tap'
import type { ManualClock } from '#shared/clock.js'
import type { JwksTuning } from '#shared/remote-jwks.js'
import { buildResourceApp } from '../../src/app.js'
import { loadResourceConfig } from '../../src/config.js'
import type { TestIssuer } from '../../../../shared/test/helpers/test-issuer.js'

export const INVALID_TOKEN = 'Bearer realm="latchkey", error="invalid_token"'

/** A resource app trusting `issuer`'s JWKS, on the injected clock, torn down with the test. */
export async function resourceFor (t: Test, issuer: TestIssuer, clock: ManualClock, jwks?: JwksTuning): Promise<FastifyInstance> {
  const config = loadResourceConfig({ JWKS_URL: issuer.jwksUrl, ISSUER: issuer.issuer, LOG_LEVEL: 'silent' })
  const app = await buildResourceApp(config, { clock, jwks })
  t.teardown(() => app.close())
  return app
}

export async function call (app: FastifyInstance, method: 'GET' | 'POST' | 'DELETE', url: string, token?: string, payload?: unknown): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` }
  return await app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as Record<string, unknown> }) })
}

export function nowS (clock: ManualClock): number {
  return Math.floor(clock.now() / 1000)
}
