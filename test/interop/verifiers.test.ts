/**
 * Tokens every verifier can read (issue: "6 of 16 common setups cannot verify EdDSA").
 * A real gateway on loopback, with its default key (ES256) and with RS256 and EdDSA key
 * files; a user token (cookie login) and a service token (client_credentials) each go
 * through libraries latchkey did not write, fetching the gateway's JWKS over HTTP:
 * jsonwebtoken + jwks-rsa and PyJWT (both as the snippets in docs/verifying-tokens.md,
 * extracted from the document and run verbatim), fast-jwt + get-jwks, @fastify/jwt +
 * get-jwks, and oauth4webapi's validateJwtAccessToken. Each must also refuse the same
 * token with its payload changed.
 *
 * ES256 (the default) and RS256 must work everywhere; EdDSA is measured and reported (the
 * matrix is printed as a comment and kept in docs/verifying-tokens.md).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import fastifyJwt from '@fastify/jwt'
import { createVerifier, type DecodedJwt } from 'fast-jwt'
import buildGetJwks from 'get-jwks'
import * as oauth from 'oauth4webapi'
import type { SigningAlg } from '#gateway/keys/signing-keys.js'
import { listeningGateway, testClients, type ListeningGateway } from '../../services/gateway/test/helpers/listening.js'
import { generateKeyFile, tempDir } from '../../services/gateway/test/keys/helpers.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
/** Debian's interpreter, where python3-jwt lives (a pyenv python3 on PATH may lack it). */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
const AUDIENCE = 'latchkey-api'
const clients = await testClients()

/** The code block following `<!-- verified: NAME -->` in docs/verifying-tokens.md. */
function docSnippet (name: string): string {
  const doc = readFileSync(join(ROOT, 'docs/verifying-tokens.md'), 'utf8')
  const m = new RegExp(`<!-- verified: ${name} -->\\n\`\`\`[a-z]+\\n([\\s\\S]*?)\\n\`\`\``).exec(doc)
  if (m === null) throw new Error(`no verified ${name} snippet in docs/verifying-tokens.md`)
  return m[1] as string
}

/** Each runner verifies every token given (JSON array in TOKENS) in one process: {sub} or {error} per token. */
const PY_RUNNER = `
import json, os
out = []
for token in json.loads(os.environ["TOKENS"]):
    try:
        out.append({"sub": verify_access_token(token)["sub"]})
    except Exception as e:
        out.append({"error": type(e).__name__ + ": " + str(e)})
print(json.dumps(out))
`
const NODE_RUNNER = `
const out = []
for (const token of JSON.parse(process.env.TOKENS)) {
  try { out.push({ sub: (await verifyAccessToken(token)).sub }) } catch (err) { out.push({ error: String(err && err.message) }) }
}
process.stdout.write(JSON.stringify(out))
`

interface Run { ok: boolean, out: string, err: string }

function run (cmd: string, args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise(resolve => {
    execFile(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, timeout: 15_000 }, (error, stdout, stderr) => {
      resolve({ ok: error === null, out: stdout, err: stderr })
    })
  })
}

/** The `sub` of each token, or the error that refused it. */
type Verify = (tokens: readonly string[]) => Promise<Array<string | Error>>

async function spawnVerify (cmd: string, args: string[], env: Record<string, string>, tokens: readonly string[]): Promise<Array<string | Error>> {
  const r = await run(cmd, args, { ...env, TOKENS: JSON.stringify(tokens) })
  if (!r.ok) throw new Error(`${cmd} failed: ${r.err}`)
  return (JSON.parse(r.out) as Array<{ sub?: string, error?: string }>).map(o => o.sub ?? new Error(o.error))
}

function each (verify: (token: string) => Promise<string>): Verify {
  return async (tokens) => await Promise.all(tokens.map(tk => verify(tk).catch((err: unknown) => err instanceof Error ? err : new Error(String(err)))))
}
interface Library { readonly name: string, make (gw: ListeningGateway, alg: SigningAlg): Promise<Verify> }

function envFor (gw: ListeningGateway, alg: SigningAlg): Record<string, string> {
  return { LATCHKEY_ISSUER: gw.base, LATCHKEY_AUDIENCE: AUDIENCE, LATCHKEY_ALGORITHMS: alg }
}

const LIBRARIES: Library[] = [
  {
    name: 'jsonwebtoken + jwks-rsa (docs snippet)',
    async make (gw, alg) {
      const code = `${docSnippet('node')}\n${NODE_RUNNER}`
      return async (tokens) => await spawnVerify(process.execPath, ['--input-type=module', '-e', code], envFor(gw, alg), tokens)
    }
  },
  {
    name: 'fast-jwt + get-jwks',
    async make (gw, alg) {
      const getJwks = buildGetJwks({ issuersWhitelist: [`${gw.base}/`] })
      const verify = createVerifier({
        key: async (decoded: DecodedJwt) => await getJwks.getPublicKey({ kid: String(decoded.header.kid), alg: String(decoded.header.alg), domain: `${gw.base}/` }),
        algorithms: [alg],
        allowedIss: gw.base,
        allowedAud: AUDIENCE,
        requiredClaims: ['sub', 'exp', 'iat', 'jti', 'client_id']
      })
      return each(async (token) => ((await verify(token)) as { sub: string }).sub)
    }
  },
  {
    name: '@fastify/jwt + get-jwks',
    async make (gw, alg) {
      const getJwks = buildGetJwks({ issuersWhitelist: [`${gw.base}/`] })
      const app = Fastify()
      await app.register(fastifyJwt, {
        decode: { complete: true },
        verify: { allowedIss: gw.base, allowedAud: AUDIENCE, algorithms: [alg] },
        secret: async (_request: unknown, token: unknown) => {
          const { header } = token as { header: { kid: string, alg: string } }
          return await getJwks.getPublicKey({ kid: header.kid, alg: header.alg, domain: `${gw.base}/` })
        }
      })
      app.get('/me', async (request) => {
        await request.jwtVerify()
        return { sub: (request.user as { sub: string }).sub }
      })
      await app.ready()
      t.teardown(() => app.close())
      return each(async (token) => {
        const res = await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
        if (res.statusCode !== 200) throw new Error(res.body)
        return (res.json() as { sub: string }).sub
      })
    }
  },
  {
    name: 'oauth4webapi validateJwtAccessToken',
    async make (gw, alg) {
      const insecure = { [oauth.allowInsecureRequests]: true }
      const issuer = new URL(gw.base)
      const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
      return each(async (token) => {
        const request = new Request(`${gw.base}/api/me`, { headers: { authorization: `Bearer ${token}` } })
        return (await oauth.validateJwtAccessToken(as, request, AUDIENCE, { signingAlgorithms: [alg], ...insecure })).sub
      })
    }
  },
  {
    name: 'PyJWT (Debian python3-jwt, docs snippet)',
    async make (gw, alg) {
      const code = `${docSnippet('python')}\n${PY_RUNNER}`
      return async (tokens) => await spawnVerify(PYTHON, ['-c', code], envFor(gw, alg), tokens)
    }
  }
]

/** The same token with `sub` changed and the signature kept. */
function tampered (token: string): string {
  const [h, p, s] = token.split('.') as [string, string, string]
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>
  return `${h}.${Buffer.from(JSON.stringify({ ...claims, sub: 'mallory' })).toString('base64url')}.${s}`
}

async function gatewayWith (alg: SigningAlg): Promise<ListeningGateway> {
  const env: Record<string, string> = { CLIENTS_FILE: clients.file }
  // ES256 is the default: no key file at all, as `npm start` runs.
  if (alg !== 'ES256') {
    const file = join(tempDir(t), 'keys.json')
    await generateKeyFile(file, alg)
    env.SIGNING_KEYS_FILE = file
  }
  return await listeningGateway(t, env)
}

async function tokensFrom (gw: ListeningGateway): Promise<{ user: string, service: string }> {
  const login = await fetch(`${gw.base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: gw.password }) })
  const cc = await fetch(`${gw.base}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'svc-b', client_secret: clients.secrets.svc_b as string, audience: AUDIENCE })
  })
  return { user: (await login.json() as { access_token: string }).access_token, service: (await cc.json() as { access_token: string }).access_token }
}

const matrix: Record<string, Record<string, string>> = {}

for (const alg of ['ES256', 'RS256', 'EdDSA'] as const) {
  t.test(`${alg} tokens through verifiers latchkey did not write`, async (t) => {
    const gw = await gatewayWith(alg)
    const { user, service } = await tokensFrom(gw)
    t.equal(JSON.parse(Buffer.from(user.split('.')[0] as string, 'base64url').toString()).alg, alg)
    const userSub = JSON.parse(Buffer.from(user.split('.')[1] as string, 'base64url').toString()).sub as string
    const cases = [['user', user, userSub], ['service', service, 'svc-b']] as const
    await Promise.all(LIBRARIES.map(async (lib) => {
      const verify = await lib.make(gw, alg)
      const results = await verify([...cases.map(c => c[1]), ...cases.map(c => tampered(c[1]))])
      const outcomes = cases.map(([kind, , sub], i) => {
        const got = results[i]
        const outcome = got === sub ? 'works' : got instanceof Error ? `fails (${got.message.split('\n')[0]?.slice(0, 100) ?? ''})` : `wrong sub ${String(got)}`
        if (alg !== 'EdDSA') t.equal(outcome, 'works', `${lib.name}: ${alg} ${kind} token verifies`)
        t.type(results[i + cases.length], Error, `${lib.name}: ${alg} tampered ${kind} token refused`)
        return `${kind}: ${outcome}`
      })
      const works = outcomes.every(o => o.endsWith('works'))
      ;(matrix[lib.name] ??= {})[alg] = works ? 'works' : `fails — ${outcomes.filter(o => !o.endsWith('works')).join('; ')}`
    }))
  })
}

t.teardown(() => {
  const lines = Object.entries(matrix).map(([lib, row]) => `${lib}: ${['ES256', 'RS256', 'EdDSA'].map(a => `${a} ${row[a] ?? '-'}`).join(' | ')}`)
  t.comment(`verifier matrix\n${lines.join('\n')}`)
})
