/**
 * A `node --cpu-prof` profile summarised as text: self time by function and by module
 * (a package under node_modules, a file of ours, or a node: built-in), heaviest first.
 * Enough to see where the gateway spends a run; open the .cpuprofile in Chrome DevTools
 * or speedscope for the flame graph.
 */
import { readFileSync } from 'node:fs'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}

interface Profile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
  startTime: number
  endTime: number
}

function moduleOf (url: string): string {
  if (url === '') return '(native / V8)'
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (nm !== null) return nm[1] as string
  if (url.startsWith('node:')) return url
  const ours = /\/(services|shared)\/(.*)$/.exec(url)
  return ours === null ? url : `${ours[1] as string}/${ours[2] as string}`
}

export function summariseProfile (file: string, top = 25): string {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const byId = new Map(profile.nodes.map(n => [n.id, n]))
  const self = new Map<number, number>()
  profile.samples.forEach((id, i) => { self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)) })
  const total = [...self.values()].reduce((s, x) => s + x, 0)
  const byFunction = new Map<string, number>()
  const byModule = new Map<string, number>()
  for (const [id, us] of self) {
    const node = byId.get(id)
    if (node === undefined) continue
    const { functionName, url, lineNumber } = node.callFrame
    const fn = `${functionName === '' ? '(anonymous)' : functionName} ${moduleOf(url)}${url === '' ? '' : `:${lineNumber + 1}`}`
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us)
    const mod = moduleOf(url)
    byModule.set(mod, (byModule.get(mod) ?? 0) + us)
  }
  const idle = [...byFunction.entries()].filter(([k]) => k.startsWith('(idle)')).reduce((s, [, v]) => s + v, 0)
  const busy = total - idle
  const pct = (us: number): string => `${((us / busy) * 100).toFixed(1).padStart(5)}%`
  const lines = [`profile ${file}`, `wall ${(total / 1e6).toFixed(1)} s, busy ${(busy / 1e6).toFixed(1)} s (percentages of busy time)`, '', 'self time by module:']
  for (const [k, v] of [...byModule.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    if (k === '(native / V8)') lines.push(`  ${pct(v - idle)}  ${k} (idle excluded)`)
    else lines.push(`  ${pct(v)}  ${k}`)
  }
  lines.push('', 'self time by function:')
  for (const [k, v] of [...byFunction.entries()].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, top)) {
    lines.push(`  ${pct(v)}  ${k}`)
  }
  return lines.join('\n')
}
