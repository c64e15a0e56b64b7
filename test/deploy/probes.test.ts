/**
 * The commands and health checks the deployment files name, run for real: the gateway and
 * the resource service are started with the exact arguments of the Dockerfile's CMD, the
 * compose `command`s and the Kubernetes `args`; then every probe path answers 200, and the
 * Docker and Compose health-check scripts exit 0 against them (and 1 against nothing).
 */
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { PORT as GATEWAY_PORT } from '#gateway/config.js'
import { JWKS_PATH } from '#gateway/keys/jwks-route.js'
import { generatePrivateJwk } from '#gateway/keys/signing-keys.js'
import { PORT as RESOURCE_PORT } from '#resource/config.js'
import { latchkey, type Proc } from '../helpers/processes.js'
import { freePort } from '../helpers/redis.js'
import { asArray, asObj, read, tempDir, yamlDocs, type Obj } from './helpers.js'

/** Exec-form JSON after `CMD` in the Dockerfile's HEALTHCHECK. */
function dockerHealthcheck (): string[] {
  const text = read('Dockerfile').replace(/\\\n/g, ' ')
  const m = /^HEALTHCHECK\s.*?CMD\s+(\[.*\])\s*$/m.exec(text)
  if (m === null) throw new Error('no HEALTHCHECK CMD [...] in the Dockerfile')
  return JSON.parse(m[1] as string) as string[]
}

function dockerCmd (): string[] {
  const m = /^CMD\s+(\[.*\])\s*$/m.exec(read('Dockerfile'))
  if (m === null) throw new Error('no CMD [...] in the Dockerfile')
  return JSON.parse(m[1] as string) as string[]
}

const [compose] = yamlDocs('docker-compose.yml')
const composeSvc = (name: string): Obj => asObj(asObj(compose?.services, 'services')[name], name)
const k8s = (file: string): Obj => {
  const [doc] = yamlDocs(file)
  const spec = asObj(asObj(asObj(doc?.spec, 'spec').template, 'template').spec, 'pod spec')
  return asObj(asArray(spec.containers, 'containers')[0], 'container')
}
const k8sGateway = k8s('k8s/base/gateway-deployment.yaml')
const k8sResource = k8s('k8s/base/resource-deployment.yaml')

/** Run `cmd` (argv) with `env`; resolves with its exit code. */
function run (cmd: string[], env: Record<string, string>): Promise<number> {
  const [file, ...args] = cmd
  return new Promise((resolve) => {
    execFile(file === 'node' ? process.execPath : String(file), args, { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 15_000 }, (err) => {
      resolve(err === null ? 0 : typeof err.code === 'number' ? err.code : -1)
    })
  })
}

async function untilHealthy (proc: Proc, url: string): Promise<void> {
  const deadline = Date.now() + 30_000
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`exited ${proc.child.exitCode}: ${proc.stderr.slice(-500)}`)
    const status = await fetch(`${url}/healthz`).then(r => r.status, () => 0)
    if (status === 200) return
    if (Date.now() > deadline) throw new Error(`no answer at ${url}: ${proc.stderr.slice(-500)}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

t.test('both services start as the deployment files say, and every probe answers', async t => {
  // One command line per service, whichever file names it.
  const gatewayArgs = [dockerCmd(), composeSvc('gateway').command, k8sGateway.args]
  const resourceArgs = [composeSvc('resource').command, k8sResource.args]
  t.same(gatewayArgs, [['gateway'], ['gateway'], ['gateway']], 'Dockerfile CMD, compose, k8s agree')
  t.same(resourceArgs, [['resource'], ['resource']])

  const dir = tempDir(t)
  const keys = join(dir, 'keys.json')
  writeFileSync(keys, JSON.stringify({ keys: [await generatePrivateJwk('EdDSA')] }))
  const gatewayPort = await freePort()
  const resourcePort = await freePort()
  const gateway = latchkey(t, gatewayArgs[0] as string[], { PORT: String(gatewayPort), HOST: '127.0.0.1', SIGNING_KEYS_FILE: keys })
  const gatewayUrl = `http://127.0.0.1:${gatewayPort}`
  await untilHealthy(gateway, gatewayUrl)
  const resource = latchkey(t, resourceArgs[0] as string[], {
    PORT: String(resourcePort), HOST: '127.0.0.1', JWKS_URL: `${gatewayUrl}${JWKS_PATH}`
  })
  const resourceUrl = `http://127.0.0.1:${resourcePort}`
  await untilHealthy(resource, resourceUrl)
  // The files address each service by its default port; here each runs on a free one.
  const urlFor = new Map([[GATEWAY_PORT, gatewayUrl], [RESOURCE_PORT, resourceUrl]])
  const portFor = new Map([[GATEWAY_PORT, gatewayPort], [RESOURCE_PORT, resourcePort]])

  t.test('Kubernetes probes and scrape paths answer 200', async t => {
    for (const container of [k8sGateway, k8sResource]) {
      const ports = asArray(container.ports, 'ports').map(p => asObj(p, 'port'))
      for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        const get = asObj(asObj(container[probe], probe).httpGet, 'httpGet')
        const containerPort = Number(ports.find(p => p.name === get.port)?.containerPort)
        const res = await fetch(`${urlFor.get(containerPort) ?? 'http://invalid'}${String(get.path)}`)
        t.equal(res.status, 200, `${String(container.name)} ${probe} ${String(get.path)}`)
      }
      const res = await fetch(`${urlFor.get(Number(ports[0]?.containerPort)) ?? ''}/metrics`)
      t.equal(res.status, 200, `${String(container.name)} /metrics`)
      t.match(await res.text(), /^# HELP /m, 'Prometheus text format')
    }
  })

  t.test('the Compose health checks pass against the services and fail against nothing', async t => {
    const closed = String(await freePort())
    for (const [name, port] of [['gateway', GATEWAY_PORT], ['resource', RESOURCE_PORT]] as const) {
      const test = asArray(asObj(composeSvc(name).healthcheck, 'healthcheck').test, 'test').map(String)
      const cmd = test.slice(1)
      t.equal(await run(cmd, { PORT: String(portFor.get(port)) }), 0, `${name}: healthy`)
      t.equal(await run(cmd, { PORT: closed }), 1, `${name}: unhealthy when nothing answers`)
      t.match(cmd.join(' '), new RegExp(`process\\.env\\.PORT \\|\\| ${port}\\b`), `${name}: falls back to its default port ${port}`)
    }
  })

  t.test('the Dockerfile HEALTHCHECK passes for either service and fails against nothing', async t => {
    const cmd = dockerHealthcheck()
    t.equal(await run(cmd, { PORT: String(gatewayPort) }), 0, 'gateway')
    t.equal(await run(cmd, { PORT: String(resourcePort) }), 0, 'resource')
    t.equal(await run(cmd, { PORT: String(await freePort()) }), 1, 'nothing listening')
  })

  t.test('the resource service reads the JWKS the gateway serves', async t => {
    const res = await fetch(`${gatewayUrl}${JWKS_PATH}`)
    t.equal(res.status, 200)
    t.equal((await fetch(`${resourceUrl}/readyz`)).status, 200, 'ready: keys fetched')
  })
})
