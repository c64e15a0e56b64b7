/**
 * The Dockerfile and .dockerignore, read as Docker reads them (instructions, line
 * continuations, ARG defaults in FROM), against the repository: what the build compiles,
 * what the runtime needs, the entrypoint and subcommands, the ports, the user. The
 * HEALTHCHECK command itself runs against real processes in probes.test.ts.
 */
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { PORT as GATEWAY_PORT } from '#gateway/config.js'
import { PORT as RESOURCE_PORT } from '#resource/config.js'
import { ROOT, cliSubcommands, filesUnder, read } from './helpers.js'

interface Instruction { readonly op: string, readonly args: string }
interface Stage { readonly from: string, readonly name: string | undefined, readonly body: Instruction[] }

/** Instructions in order: comments dropped, `\` continuations joined. */
function instructions (text: string): Instruction[] {
  const out: Instruction[] = []
  let pending = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (pending === '' && (line === '' || line.startsWith('#'))) continue
    if (line.startsWith('#')) continue
    if (line.endsWith('\\')) { pending += `${line.slice(0, -1)} `; continue }
    const full = `${pending}${line}`.trim()
    pending = ''
    if (full === '') continue
    const m = /^(\S+)\s+([\s\S]*)$/.exec(full)
    if (m === null) throw new Error(`unparsable instruction: ${full}`)
    out.push({ op: (m[1] as string).toUpperCase(), args: (m[2] as string).trim() })
  }
  return out
}

function stages (all: Instruction[]): Stage[] {
  const args = new Map<string, string>()
  const out: Array<{ from: string, name: string | undefined, body: Instruction[] }> = []
  for (const ins of all) {
    if (ins.op === 'ARG' && out.length === 0) {
      const [k, v] = ins.args.split('=')
      if (k !== undefined && v !== undefined) args.set(k, v)
    } else if (ins.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)
      const image = (m?.[1] ?? '').replace(/\$\{(\w+)\}|\$(\w+)/g, (_all, a: string | undefined, b: string | undefined) => args.get(a ?? b ?? '') ?? '')
      out.push({ from: image, name: m?.[2], body: [] })
    } else {
      out.at(-1)?.body.push(ins)
    }
  }
  return out
}

const execForm = (args: string): string[] => JSON.parse(args) as string[]

const all = instructions(read('Dockerfile'))
const [build, runtime, ...extra] = stages(all)
const body = (s: Stage | undefined, op: string): Instruction[] => (s?.body ?? []).filter(i => i.op === op)

t.test('two stages on Node 20: build, then runtime', async t => {
  t.equal(extra.length, 0)
  t.equal(build?.name, 'build')
  t.equal(runtime?.name, 'runtime')
  for (const s of [build, runtime]) t.match(s?.from, /^node:20-(bookworm-slim|alpine)$/, `${s?.name ?? ''}: ${s?.from ?? ''}`)
  t.equal(build?.from, runtime?.from, 'both stages on one base image')
  const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node
  t.match(engines, /^>=20/, 'package.json accepts Node 20')
})

t.test('build stage: all dependencies, then `npm run build` over every compiled directory', async t => {
  const runs = body(build, 'RUN').map(i => i.args)
  t.ok(runs.some(r => /^npm ci\b/.test(r) && !r.includes('--omit=dev')), 'npm ci with dev dependencies (tsc)')
  t.ok(runs.includes('npm run build'))
  const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts
  t.equal(scripts.build, 'tsc -p tsconfig.build.json && node scripts/build-browser.mjs')
  const copies = body(build, 'COPY').map(i => i.args.split(/\s+/))
  const copied = new Set(copies.flatMap(c => c.slice(0, -1)))
  // Every script the build runs is in the build stage, and not excluded from the context.
  for (const script of (scripts.build ?? '').match(/scripts\/[\w.-]+/g) ?? []) {
    t.ok(copied.has(script), `copies ${script}`)
    t.match(read('.dockerignore'), new RegExp(`^!${script.replace('.', '\\.')}$`, 'm'), `${script} is re-included in .dockerignore`)
  }
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json']) t.ok(copied.has(f), `copies ${f}`)
  // Every directory tsconfig.build.json compiles is in the image, including services added later.
  const include = (JSON.parse(read('tsconfig.build.json')) as { include: string[] }).include
  const dirs = include.flatMap(pattern => {
    const m = /^([^*]+)\/\*\/(.+)$/.exec(pattern)
    if (m === null) return [pattern]
    return readdirSync(join(ROOT, m[1] as string)).map(d => `${m[1] as string}/${d}/${m[2] as string}`).filter(d => existsSync(join(ROOT, d)))
  })
  t.ok(dirs.length >= 3)
  for (const d of dirs) t.ok(copied.has(d), `copies ${d}`)
})

t.test('runtime stage: production dependencies, the compiled code and the CLI entry only', async t => {
  const runs = body(runtime, 'RUN').map(i => i.args)
  t.ok(runs.some(r => /^npm ci\b/.test(r) && r.includes('--omit=dev')), 'npm ci --omit=dev')
  const copies = body(runtime, 'COPY').map(i => i.args)
  t.ok(copies.includes('package.json package-lock.json ./'))
  t.ok(copies.includes('bin bin'))
  t.ok(copies.includes('--from=build /app/dist dist'), 'dist/ from the build stage')
  t.equal(copies.length, 3, 'no sources, tests or secrets')
  t.same(body(runtime, 'WORKDIR').map(i => i.args), ['/app'])
  t.same(body(build, 'WORKDIR').map(i => i.args), ['/app'], 'dist is at /app/dist in the build stage')
  // Node resolves #shared/#gateway/#resource to dist/ unless the source condition is set.
  const imports = (JSON.parse(read('package.json')) as { imports: Record<string, { default: string }> }).imports
  for (const [k, v] of Object.entries(imports)) t.match(v.default, /^\.\/dist\//, `${k} resolves into dist/ at runtime`)
  t.same(body(runtime, 'ENV').map(i => i.args), ['NODE_ENV=production'])
})

t.test('the compiled code imports production dependencies only (the runtime has no others)', async t => {
  const deps = new Set(Object.keys((JSON.parse(read('package.json')) as { dependencies: Record<string, string> }).dependencies))
  const files = ['services', 'shared'].flatMap(d => filesUnder(d)).filter(f => /^(services\/[^/]+|shared)\/src\/.*\.ts$/.test(f))
  t.ok(files.length > 20)
  const seen = new Set<string>()
  for (const file of files) {
    // Type-only imports are erased by tsc and never loaded.
    const source = read(file).replace(/^(import|export) type\b[\s\S]*?from\s+'[^']+'/gm, '')
    for (const m of source.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^import\s+)'([^'.#/][^']*)'/gm)) {
      const spec = m[1] as string
      if (spec.startsWith('node:')) continue
      const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] as string)
      if (seen.has(`${file} ${pkg}`)) continue
      seen.add(`${file} ${pkg}`)
      t.ok(deps.has(pkg), `${file}: ${pkg} is in "dependencies"`)
    }
  }
})

t.test('entrypoint is the latchkey CLI; the default command is the gateway', async t => {
  const entrypoint = body(runtime, 'ENTRYPOINT').map(i => execForm(i.args))
  t.same(entrypoint, [['node', 'bin/latchkey.js']])
  t.ok(existsSync(join(ROOT, 'bin/latchkey.js')))
  // bin/latchkey.js runs the compiled CLI: tsc's output path for services/gateway/src/cli/main.ts.
  t.match(read('bin/latchkey.js'), /'\.\.\/dist\/services\/gateway\/src\/cli\/main\.js'/)
  t.ok(existsSync(join(ROOT, 'services/gateway/src/cli/main.ts')))
  const cmd = body(runtime, 'CMD').map(i => execForm(i.args))
  t.same(cmd, [['gateway']])
  const subcommands = cliSubcommands()
  for (const sub of ['gateway', 'resource', 'keys', 'users', 'clients']) t.ok(subcommands.has(sub), `latchkey ${sub} exists`)
})

t.test('runs as the unprivileged node user, exposes both services\' ports', async t => {
  const users = all.filter(i => i.op === 'USER')
  t.same(users.map(u => u.args), ['node'])
  const runtimeOps = (runtime?.body ?? []).map(i => i.op)
  t.ok(runtimeOps.indexOf('USER') > runtimeOps.lastIndexOf('RUN'), 'USER after the last RUN: nothing later runs as root')
  t.ok(runtimeOps.indexOf('USER') > runtimeOps.lastIndexOf('COPY'), 'and after the last COPY')
  t.same(body(runtime, 'EXPOSE').map(i => i.args), [`${GATEWAY_PORT} ${RESOURCE_PORT}`], 'the ports config.ts defaults to')
})

t.test('a HEALTHCHECK in exec form, node\'s fetch against /healthz', async t => {
  const hc = body(runtime, 'HEALTHCHECK')
  t.equal(hc.length, 1)
  const m = /^((?:--\S+\s+)*)CMD\s+(\[.*\])$/.exec(hc[0]?.args ?? '')
  t.ok(m, 'options then CMD [...]')
  const cmd = execForm(m?.[2] ?? '[]')
  t.same(cmd.slice(0, 2), ['node', '-e'])
  t.match(cmd[2], /\/healthz'/, 'liveness: a Redis outage must not mark the container unhealthy')
  t.match(m?.[1], /--interval=\d+s/)
  t.match(m?.[1], /--timeout=\d+s/)
})

t.test('.dockerignore keeps secrets and local state out, and everything copied in', async t => {
  const patterns = read('.dockerignore').split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#'))
  for (const p of ['.git', 'node_modules', 'dist', 'secrets', 'k8s/overlays/*/secrets', '.env']) t.ok(patterns.includes(p), `ignores ${p}`)
  const toRegExp = (p: string): RegExp => new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*\//g, '(.*/)?').replace(/\*/g, '[^/]*')}(/.*)?$`)
  const sources = all.filter(i => i.op === 'COPY' && !i.args.startsWith('--from')).flatMap(i => i.args.split(/\s+/).slice(0, -1))
  t.ok(sources.length >= 7)
  for (const src of sources) {
    // Docker applies the patterns in order: the last one that matches wins, and `!` re-includes.
    let excluded = false
    for (const p of patterns) {
      if (p.startsWith('!') ? toRegExp(p.slice(1)).test(src) : toRegExp(p).test(src)) excluded = !p.startsWith('!')
    }
    t.notOk(excluded, `${src} reaches the build context`)
  }
  t.ok(toRegExp('k8s/overlays/*/secrets').test('k8s/overlays/production/secrets/keys.json'), 'the matcher itself works')
})
