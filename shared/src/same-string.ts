/**
 * Constant-time equality of two strings (secrets compared with what was presented: a
 * token hash, a sign-in `state`, a PKCE challenge): the time taken says nothing about how
 * much of a prefix matched. Strings of different lengths are unequal at once; the lengths
 * compared here are public (fixed-size encodings).
 */
import { timingSafeEqual } from 'node:crypto'

export function sameString (a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}
