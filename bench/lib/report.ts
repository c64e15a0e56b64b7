/**
 * What a run produces: the rows, the ratios and the targets (issue #6), as the Markdown
 * table printed at the end and as bench/results/latest.json.
 */
import type { Summary } from './load.js'

export interface Row extends Partial<Summary> {
  readonly key: string
  readonly name: string
  readonly group: string
  /** The set of rows run alternately (and drawn to one scale). */
  readonly set: string
  /** Drawn to its own scale in the chart (a row orders of magnitude below its set's others). */
  readonly ownScale?: boolean
  /** Ours (latchkey) or a peer it is compared with. */
  readonly kind: 'latchkey' | 'peer'
  readonly connections: number
  /**
   * CPU time (user + system, all threads) per answered request, by process, the server
   * under test first: far steadier than req/s when other work shares the machine.
   */
  readonly cpu_us_per_request?: Record<string, number | null>
  /** Why the row was not measured. */
  readonly skipped?: string
  readonly note?: string
}

export interface Target {
  readonly name: string
  readonly goal: string
  readonly measured: number | null
  readonly unit: string
  readonly met: boolean | null
}

function fmtInt (n: number | undefined): string {
  return n === undefined || Number.isNaN(n) ? '–' : Math.round(n).toLocaleString('en-US')
}

export function fmtMs (n: number | undefined): string {
  if (n === undefined || Number.isNaN(n)) return '–'
  return n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0)
}

export function fmtRatio (n: number | null | undefined): string {
  return n === null || n === undefined || Number.isNaN(n) ? '–' : `${n.toFixed(2)}×`
}

export function ratio (a: Row | undefined, b: Row | undefined): number | null {
  if (a?.rps === undefined || b?.rps === undefined || b.rps === 0 || a.skipped !== undefined || b.skipped !== undefined) return null
  return Math.round((a.rps / b.rps) * 1000) / 1000
}

/** CPU per request of the server under test, and of the upstream or Redis behind it. */
function cpuCell (r: Row): string {
  const entries = Object.entries(r.cpu_us_per_request ?? {}).filter((e): e is [string, number] => e[1] !== null)
  if (entries.length === 0) return '–'
  const [first, ...rest] = entries as [[string, number], ...Array<[string, number]>]
  return [fmtInt(first[1]), ...rest.map(([label, us]) => `+ ${fmtInt(us)} ${label}`)].join(' ')
}

/** The Markdown table: every row with req/s, p50, p99, and its ratios in the last column. */
export function markdownTable (rows: readonly Row[], ratios: ReadonlyMap<string, string>): string {
  const lines = ['| Row | req/s | p50 ms | p99 ms | CPU µs/req | Ratio |', '|---|---:|---:|---:|---:|---|']
  let group = ''
  for (const r of rows) {
    if (r.group !== group) {
      group = r.group
      lines.push(`| **${group}** | | | | | |`)
    }
    if (r.skipped !== undefined) {
      lines.push(`| ${r.name} | – | – | – | – | skipped: ${r.skipped} |`)
      continue
    }
    const flags = (r.non2xx ?? 0) + (r.errors ?? 0) > 0 ? ` ⚠ ${fmtInt(r.non2xx)} non-2xx, ${fmtInt(r.errors)} errors` : ''
    lines.push(`| ${r.name} | ${fmtInt(r.rps)} | ${fmtMs(r.p50_ms)} | ${fmtMs(r.p99_ms)} | ${cpuCell(r)} | ${ratios.get(r.key) ?? ''}${flags} |`)
  }
  return lines.join('\n')
}

export function targetsTable (targets: readonly Target[]): string {
  const lines = ['| Target | Goal | Measured | Met |', '|---|---|---:|:---:|']
  for (const t of targets) {
    const measured = t.measured === null ? '–' : t.unit === '×' ? fmtRatio(t.measured) : `${fmtInt(t.measured)}${t.unit === '' ? '' : ` ${t.unit}`}`
    lines.push(`| ${t.name} | ${t.goal} | ${measured} | ${t.met === null ? '–' : t.met ? 'yes' : 'no'} |`)
  }
  return lines.join('\n')
}

export function atLeast (name: string, goal: number, measured: number | null | undefined, unit: string): Target {
  const m = measured ?? null
  const shown = unit === '×' ? `≥ ${goal}×` : `≥ ${goal.toLocaleString('en-US')}${unit === '' ? '' : ` ${unit}`}`
  return { name, goal: shown, measured: m, unit, met: m === null ? null : m >= goal }
}

export function atMost (name: string, goal: number, measured: number | null | undefined, unit: string): Target {
  const m = measured ?? null
  return { name, goal: `≤ ${goal.toLocaleString('en-US')} ${unit}`, measured: m, unit, met: m === null ? null : m <= goal }
}
