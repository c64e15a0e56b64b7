/**
 * The run as a bar chart, hand-written SVG: one bar per row (req/s, scaled within its
 * group, since logins and GETs differ by orders of magnitude), p50/p99 beside it, ours
 * in blue and peers in grey, and the targets underneath.
 */
import { type Row, type Target, fmtMs, fmtRatio } from './report.js'

const WIDTH = 980
const LABEL_X = 330
const BAR_X = 340
const BAR_MAX = 320
const ROW_H = 24
const GROUP_GAP = 34
const OURS = '#2b6cb0'
const PEER = '#a0aec0'

function esc (s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

function int (n: number): string {
  return Math.round(n).toLocaleString('en-US')
}

export function chartSvg (title: string, subtitle: string, rows: readonly Row[], targets: readonly Target[]): string {
  const parts: string[] = []
  let y = 30
  parts.push(`<text x="20" y="${y}" class="title">${esc(title)}</text>`)
  y += 20
  parts.push(`<text x="20" y="${y}" class="sub">${esc(subtitle)}</text>`)
  y += 16
  // One scale per set of rows that ran alternately (the rows a ratio compares).
  const maxBySet = new Map<string, number>()
  const scaleOf = (r: Row): string => r.ownScale === true ? `row:${r.key}` : r.set
  for (const r of rows) if (r.skipped === undefined) maxBySet.set(scaleOf(r), Math.max(maxBySet.get(scaleOf(r)) ?? 1, r.rps ?? 0))
  const groups = [...new Set(rows.map(r => r.group))]
  for (const group of groups) {
    const members = rows.filter(r => r.group === group)
    y += GROUP_GAP - 8
    parts.push(`<text x="20" y="${y}" class="group">${esc(group)}</text>`)
    y += 8
    for (const r of members) {
      y += ROW_H
      parts.push(`<text x="${LABEL_X}" y="${y - 7}" class="label" text-anchor="end">${esc(r.name)}</text>`)
      if (r.skipped !== undefined || r.rps === undefined) {
        parts.push(`<text x="${BAR_X}" y="${y - 7}" class="skip">skipped: ${esc(r.skipped ?? 'not measured')}</text>`)
        continue
      }
      // A row on its own scale fills part of the width, so it does not read as its set's fastest.
      const span = r.ownScale === true ? BAR_MAX / 2 : BAR_MAX
      const w = Math.max(1, Math.round((r.rps / (maxBySet.get(scaleOf(r)) ?? r.rps)) * span))
      const fill = r.kind === 'latchkey' ? OURS : PEER
      parts.push(`<rect x="${BAR_X}" y="${y - 19}" width="${w}" height="16" rx="2" fill="${fill}"><title>${esc(`${r.name}: ${int(r.rps)} req/s, p50 ${fmtMs(r.p50_ms)} ms, p99 ${fmtMs(r.p99_ms)} ms`)}</title></rect>`)
      parts.push(`<text x="${BAR_X + w + 6}" y="${y - 7}" class="value">${int(r.rps)}/s${r.ownScale === true ? ' (own scale)' : ''}</text>`)
      const cpu = Object.values(r.cpu_us_per_request ?? {})[0]
      const cpuText = cpu === undefined || cpu === null ? '' : ` · ${int(cpu)} µs CPU`
      parts.push(`<text x="${WIDTH - 20}" y="${y - 7}" class="lat" text-anchor="end">p50 ${fmtMs(r.p50_ms)} · p99 ${fmtMs(r.p99_ms)} ms${cpuText}</text>`)
    }
  }
  y += GROUP_GAP
  parts.push(`<text x="20" y="${y}" class="group">Targets</text>`)
  for (const t of targets) {
    y += 20
    const mark = t.met === null ? '–' : t.met ? '✓' : '✗'
    const cls = t.met === null ? 'skip' : t.met ? 'met' : 'miss'
    const measured = t.measured === null ? 'not measured' : t.unit === '×' ? fmtRatio(t.measured) : `${int(t.measured)}${t.unit === '' ? '' : ` ${t.unit}`}`
    parts.push(`<text x="20" y="${y}" class="${cls}">${mark}</text>`)
    parts.push(`<text x="40" y="${y}" class="label">${esc(t.name)}: ${esc(measured)} (goal ${esc(t.goal)})</text>`)
  }
  y += 24
  parts.push(`<rect x="20" y="${y - 10}" width="12" height="10" fill="${OURS}"/><text x="38" y="${y}" class="sub">latchkey</text>`)
  parts.push(`<rect x="110" y="${y - 10}" width="12" height="10" fill="${PEER}"/><text x="128" y="${y}" class="sub">peer; bars share a scale within each set of rows run alternately</text>`)
  const height = y + 16
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif">
<style>
.title { font-size: 18px; font-weight: 600; fill: #1a202c }
.sub { font-size: 12px; fill: #4a5568 }
.group { font-size: 14px; font-weight: 600; fill: #2d3748 }
.label { font-size: 12px; fill: #2d3748 }
.value { font-size: 12px; fill: #1a202c; font-variant-numeric: tabular-nums }
.lat { font-size: 11px; fill: #4a5568; font-variant-numeric: tabular-nums }
.skip { font-size: 12px; fill: #a0aec0; font-style: italic }
.met { font-size: 13px; fill: #2f855a; font-weight: 700 }
.miss { font-size: 13px; fill: #c53030; font-weight: 700 }
</style>
<rect width="100%" height="100%" fill="#ffffff"/>
${parts.join('\n')}
</svg>
`
}
