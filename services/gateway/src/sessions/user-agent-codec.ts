/**
 * A lossless, static-dictionary encoding of the user agent a family stores, in the spirit
 * of HPACK's static table (RFC 7541 §2.3.1): the fragments every browser repeats
 * ("Mozilla/5.0 (", ") AppleWebKit/537.36 (KHTML, like Gecko) Chrome/", ...) become one
 * control byte each. A current Chrome user agent shrinks from 111 bytes to about 10, which
 * is most of what a session costs in Redis; the sessions list shows the original text.
 *
 * Control bytes cannot occur in a header value (RFC 9110 §5.5; Node's parser refuses them),
 * so a code never collides with user-agent text. A string that does hold one (only possible
 * through the store's API) is stored verbatim behind RAW_MARKER. The table is part of the
 * stored format: entries may be appended to unused codes, never changed or reordered.
 */

/** Leads a value stored without substitutions. */
const RAW_MARKER = '\x7f'

/** code → fragment. 0x00, TAB, LF, CR and DEL are never used as codes. */
const TABLE: ReadonlyArray<readonly [number, string]> = [
  [0x01, 'Mozilla/5.0 ('],
  [0x02, 'Windows NT 10.0; Win64; x64'],
  [0x03, 'Macintosh; Intel Mac OS X '],
  [0x04, 'X11; Linux x86_64'],
  [0x05, 'Linux; Android '],
  [0x06, ') AppleWebKit/537.36 (KHTML, like Gecko) Chrome/'],
  [0x07, ') AppleWebKit/605.1.15 (KHTML, like Gecko) '],
  [0x08, ') AppleWebKit/537.36 (KHTML, like Gecko) '],
  [0x0b, '.0.0.0'],
  [0x0c, ' Safari/537.36'],
  [0x0e, ' Mobile Safari/537.36'],
  [0x0f, 'iPhone; CPU iPhone OS '],
  [0x10, 'iPad; CPU OS '],
  [0x11, ' like Mac OS X'],
  [0x12, 'Version/'],
  [0x13, ' Mobile/15E148'],
  [0x14, ' Safari/604.1'],
  [0x15, ' Safari/605.1.15'],
  [0x16, '; rv:'],
  [0x17, ') Gecko/20100101 Firefox/'],
  [0x18, ' Edg/'],
  [0x19, '10_15_7'],
  [0x1a, 'CriOS/'],
  [0x1b, ' OPR/'],
  [0x1c, 'Windows NT 10.0'],
  [0x1d, 'Chrome/'],
  [0x1e, 'Firefox/'],
  [0x1f, 'Safari/']
]

const DECODE = new Map<string, string>(TABLE.map(([code, fragment]) => [String.fromCharCode(code), fragment]))
/** Fragments by first character, longest first: the encoder takes the longest match. */
const BY_FIRST_CHAR = new Map<string, Array<[string, string]>>()
for (const [code, fragment] of TABLE) {
  const first = fragment[0] as string
  const list = BY_FIRST_CHAR.get(first) ?? []
  list.push([fragment, String.fromCharCode(code)])
  list.sort((a, b) => b[0].length - a[0].length)
  BY_FIRST_CHAR.set(first, list)
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/

/** Encoded forms of recently seen user agents: a handful of strings covers most traffic. */
const CACHE_MAX_ENTRIES = 512
const cache = new Map<string, string>()

function substitute (userAgent: string): string {
  let out = ''
  let i = 0
  while (i < userAgent.length) {
    const candidates = BY_FIRST_CHAR.get(userAgent[i] as string)
    const hit = candidates?.find(([fragment]) => userAgent.startsWith(fragment, i))
    if (hit === undefined) {
      out += userAgent[i] as string
      i++
    } else {
      out += hit[1]
      i += hit[0].length
    }
  }
  return out
}

export function encodeUserAgent (userAgent: string): string {
  if (CONTROL.test(userAgent)) return RAW_MARKER + userAgent
  let encoded = cache.get(userAgent)
  if (encoded === undefined) {
    encoded = substitute(userAgent)
    if (cache.size >= CACHE_MAX_ENTRIES) cache.clear()
    cache.set(userAgent, encoded)
  }
  return encoded
}

export function decodeUserAgent (stored: string): string {
  if (stored.startsWith(RAW_MARKER)) return stored.slice(1)
  if (!CONTROL.test(stored)) return stored
  let out = ''
  for (const ch of stored) out += DECODE.get(ch) ?? ch
  return out
}
