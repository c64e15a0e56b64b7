/**
 * Request-target handling for the proxy: the path is normalised before it is matched
 * against the route table, and the normalised path (plus the untouched query) is what goes
 * upstream, so the upstream can never read a path differently from how the gateway checked it.
 *
 * Policy (decided once, here):
 * - Only RFC 3986 `pchar`s, `/` and well-formed `%XX` triplets may appear in the path: a raw
 *   `\`, `#`, control or non-ASCII byte is refused (400), not guessed at.
 * - Encoded `/` (`%2F`) and `\` (`%5C`) are refused (400): upstreams disagree on whether they
 *   separate segments, so no normalisation of them could be consistent. Encoded control
 *   bytes (`%00`-`%1F`, `%7F`) are refused too: some stacks truncate at NUL.
 * - Encoded unreserved characters are decoded (`%2e` -> `.`, RFC 3986 §6.2.2.2) and other
 *   triplets upper-cased (§6.2.2.1), so `%2e%2e` is `..`.
 * - Runs of `/` collapse to one, then dot segments are removed (§5.2.4), in that order (as
 *   nginx's merge_slashes does): `/api//../x` is `/x`, outside `/api/`.
 * - A segment that is a dot segment followed by `;params` (`..;x`, Tomcat and Jetty read it
 *   as `..`) is refused (400).
 * The caller refuses a normalised path that no longer falls under the route it was sent to.
 */

export type NormalisedPath =
  | { readonly ok: true, readonly path: string }
  | { readonly ok: false, readonly reason: 'characters' | 'encoded_separator' | 'encoded_control' | 'dot_segment_params' }

/** RFC 3986 §3.3 path-absolute: pchar = unreserved / pct-encoded / sub-delims / ":" / "@". */
const PATH_SYNTAX = /^\/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$/
const TRIPLET = /%([0-9A-Fa-f]{2})/g
/** §2.3 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
const UNRESERVED = /^[A-Za-z0-9\-._~]$/
const SLASHES = /\/{2,}/g

/** Split a request-target (origin-form, RFC 9112 §3.2.1) into its path and `?query` (kept verbatim). */
export function splitTarget (url: string): { readonly path: string, readonly query: string } {
  const q = url.indexOf('?')
  return q === -1 ? { path: url, query: '' } : { path: url.slice(0, q), query: url.slice(q) }
}

/**
 * Paths already in normal form, which the full algorithm would return unchanged: segments of
 * pchars but `%` and `;`, none empty (no `//`), none starting with `.` (so no dot segment),
 * an optional trailing `/`. Most requests look like this; they skip the decoding and splitting.
 */
const ALREADY_NORMAL = /^(?:\/(?!\.)[A-Za-z0-9\-._~!$&'()*+,=:@]+)*\/?$/

export function normalisePath (raw: string): NormalisedPath {
  return ALREADY_NORMAL.test(raw) ? { ok: true, path: raw } : normalisePathFully(raw)
}

/** The whole policy above, for any path (exported so tests can hold `normalisePath` to it). */
export function normalisePathFully (raw: string): NormalisedPath {
  if (!PATH_SYNTAX.test(raw)) return { ok: false, reason: 'characters' }
  let refused: 'encoded_separator' | 'encoded_control' | undefined
  const decoded = raw.replace(TRIPLET, (triplet, hex: string) => {
    const code = Number.parseInt(hex, 16)
    if (code === 0x2f || code === 0x5c) refused ??= 'encoded_separator'
    else if (code < 0x20 || code === 0x7f) refused ??= 'encoded_control'
    const ch = String.fromCharCode(code)
    return UNRESERVED.test(ch) ? ch : triplet.toUpperCase()
  })
  if (refused !== undefined) return { ok: false, reason: refused }

  const segments = decoded.replace(SLASHES, '/').split('/').slice(1)
  const out: string[] = []
  // A path ending in a dot segment keeps its trailing slash: `/a/b/..` is `/a/` (§5.2.4).
  let trailingSlash = false
  for (const segment of segments) {
    const bare = segment.split(';', 1)[0]
    if ((bare === '.' || bare === '..') && segment !== bare) return { ok: false, reason: 'dot_segment_params' }
    if (segment === '.' || segment === '..') {
      if (segment === '..') out.pop()
      trailingSlash = true
    } else {
      out.push(segment)
      trailingSlash = false
    }
  }
  let path = `/${out.join('/')}`
  if (trailingSlash && !path.endsWith('/')) path += '/'
  return { ok: true, path }
}

/** `path` with every segment's `;params` removed (RFC 3986 §3.3): `/a;x/b;y` is `/a/b`. */
function withoutParams (path: string): string {
  return path.replace(/;[^/]*/g, '')
}

/**
 * The route whose prefix is the longest one `path` falls under, matched on whole segments
 * with `;params` removed (Tomcat, Jetty and Spring read `/admin;x/` as `/admin/`), and with
 * a prefix's own path without its trailing slash (`/echo/admin`) belonging to that prefix
 * (`/echo/admin/`), as upstreams serve it: a nested route can never be reached through its
 * parent's by spelling.
 */
export function routeFor<R extends { readonly prefix: string }> (routes: readonly R[], path: string): R | undefined {
  const key = path.includes(';') ? withoutParams(path) : path
  let best: R | undefined
  for (const route of routes) {
    const { prefix } = route
    const under = key.startsWith(prefix) || (key.length === prefix.length - 1 && prefix.startsWith(key))
    if (under && (best === undefined || prefix.length > best.prefix.length)) best = route
  }
  return best
}
