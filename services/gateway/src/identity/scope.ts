/**
 * Scope strings, RFC 6749 §3.3:
 *   scope       = scope-token *( SP scope-token )
 *   scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
 * i.e. printable ASCII without space, `"` and `\`. Repeated spaces are tolerated on
 * input and duplicates dropped (order kept), so `parseScope` yields a canonical list.
 */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/
const MAX_TOKEN_LENGTH = 128

/** The tokens of `value`, or null if any token is not a valid scope-token. An empty string is no scopes. */
export function parseScope (value: string): string[] | null {
  const tokens: string[] = []
  for (const token of value.split(' ')) {
    if (token === '') continue
    if (token.length > MAX_TOKEN_LENGTH || !SCOPE_TOKEN.test(token)) return null
    if (!tokens.includes(token)) tokens.push(token)
  }
  return tokens
}

export function formatScope (tokens: readonly string[]): string {
  return tokens.join(' ')
}
